// http-mitm-proxy (the comparison peer) in a process of its own, configured the way its README
// suggests for a MITM proxy: keep-alive on, its own CA in sslCaDir. The upstream CA reaches it
// through NODE_EXTRA_CA_CERTS (set by run.ts); *.bench.test resolves to 127.0.0.1 through the
// agents' lookup, the equivalent of portcullis' upstream.resolve.
// Usage: node --import tsx bench/mitm-child.ts SSL_CA_DIR
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { join } from "node:path";
import mitm from "http-mitm-proxy";
import { benchLookup, serveParent } from "./lib.js";

const [sslCaDir] = process.argv.slice(2);
if (!sslCaDir) throw new Error("usage: mitm-child.ts SSL_CA_DIR");

// http-mitm-proxy prints every error (client resets included) and a line per new host; keep
// the console quiet so printing is not what gets measured, but count what it reports.
const errors: Record<string, number> = {};
const firstErrors: string[] = [];
console.debug = () => undefined;
console.info = () => undefined;
console.log = () => undefined;
console.error = (...args: unknown[]) => {
  if (firstErrors.length < 5) firstErrors.push(args.map(String).join(" ").slice(0, 300));
};

const agentOptions = { keepAlive: true, lookup: benchLookup as unknown as https.AgentOptions["lookup"] };
const proxy = new mitm.Proxy();
proxy.onError((_ctx, error, kind) => {
  const key = `${kind ?? "?"}: ${(error as NodeJS.ErrnoException | undefined)?.code ?? (error as Error | undefined)?.message ?? "?"}`;
  errors[key] = (errors[key] ?? 0) + 1;
});

await new Promise<void>((resolve, reject) =>
  proxy.listen(
    {
      host: "127.0.0.1",
      port: 0,
      sslCaDir,
      keepAlive: true,
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
    },
    (error?: Error | null) => (error ? reject(error) : resolve()),
  ),
);

serveParent(
  {
    type: "ready",
    port: (proxy.httpServer!.address() as { port: number }).port,
    caPem: readFileSync(join(sslCaDir, "certs", "ca.pem"), "utf8"),
  },
  { stats: () => ({ type: "stats", errors, firstErrors, memory: process.memoryUsage().rss }) },
  async () => {
    proxy.close();
  },
);
