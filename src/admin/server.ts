import http, { type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface AdminStatus {
  /** false while draining or before the proxy listens */
  ready(): boolean;
  details(): Record<string, unknown>;
  metrics(): Promise<{ contentType: string; body: string }>;
}

/** /healthz (the process answers), /readyz (CA loaded, policy valid, accepting), /metrics (Prometheus). */
export function createAdminServer(status: AdminStatus): Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ status: "ok" }));
      return;
    }
    if (path === "/readyz") {
      const ready = status.ready();
      res.writeHead(ready ? 200 : 503, { "Content-Type": "application/json" }).end(JSON.stringify({ ready, ...status.details() }));
      return;
    }
    if (path === "/metrics") {
      status.metrics().then(
        ({ contentType, body }) => res.writeHead(200, { "Content-Type": contentType }).end(body),
        (error: Error) => res.writeHead(500, { "Content-Type": "text/plain" }).end(`metrics unavailable: ${error.message}\n`),
      );
      return;
    }
    res.writeHead(404, { "Content-Type": "text/plain" }).end("not found: try /healthz, /readyz or /metrics\n");
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
