import http, { type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface AdminStatus {
  /** false while draining or before the proxy listens */
  ready(): boolean;
  /** Why the process cannot recover without a restart (/healthz answers 503), or undefined. */
  broken?(): string | undefined;
  details(): Record<string, unknown>;
  metrics(): Promise<{ contentType: string; body: string }>;
}

/**
 * One feature's endpoint on the admin listener. `path` is exact, or a prefix when it ends in
 * "/" (then `rest` is what follows it). A feature adds its routes where the proxy is wired up.
 */
export interface AdminRoute {
  path: string;
  methods: readonly string[];
  handle(req: IncomingMessage, res: ServerResponse, rest: string): void | Promise<void>;
}

function statusRoutes(status: AdminStatus): AdminRoute[] {
  const read = ["GET", "HEAD"];
  return [
    {
      path: "/healthz",
      methods: read,
      handle: (_req, res) => {
        const broken = status.broken?.();
        res.writeHead(broken ? 503 : 200, { "Content-Type": "application/json" }).end(JSON.stringify(broken ? { status: "broken", reason: broken } : { status: "ok" }));
      },
    },
    {
      path: "/readyz",
      methods: read,
      handle: (_req, res) => {
        const ready = status.ready();
        res.writeHead(ready ? 200 : 503, { "Content-Type": "application/json" }).end(JSON.stringify({ ready, ...status.details() }));
      },
    },
    {
      path: "/metrics",
      methods: read,
      handle: (_req, res) =>
        status.metrics().then(
          ({ contentType, body }) => void res.writeHead(200, { "Content-Type": contentType }).end(body),
          (error: Error) => void res.writeHead(500, { "Content-Type": "text/plain" }).end(`metrics unavailable: ${error.message}\n`),
        ),
    },
  ];
}

function findRoute(routes: readonly AdminRoute[], path: string): { route: AdminRoute; rest: string } | undefined {
  for (const route of routes) {
    if (route.path === path) return { route, rest: "" };
    if (route.path.endsWith("/") && path.startsWith(route.path)) return { route, rest: path.slice(route.path.length) };
  }
  return undefined;
}

/** /healthz (the process answers and can recover by itself), /readyz (CA loaded, policy valid, accepting), /metrics (Prometheus), and each feature's routes. */
export function createAdminServer(status: AdminStatus, extraRoutes: readonly AdminRoute[] = []): Server {
  const routes = [...statusRoutes(status), ...extraRoutes];
  return http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const found = findRoute(routes, path);
    if (!found) {
      const known = routes.map((route) => route.path).join(", ");
      res.writeHead(404, { "Content-Type": "text/plain" }).end(`not found: try ${known}\n`);
      return;
    }
    if (!found.route.methods.includes(req.method ?? "GET")) {
      res.writeHead(405, { Allow: found.route.methods.join(", ") }).end();
      return;
    }
    Promise.resolve()
      .then(() => found.route.handle(req, res, found.rest))
      .catch((error: Error) => {
        if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
        res.end(`admin endpoint failed: ${error.message}\n`);
      });
  });
}

export function listenAdmin(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
