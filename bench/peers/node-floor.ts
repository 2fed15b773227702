// The floor under any Node.js MITM: CONNECT answered 200, the tunnel's TLS handed to one
// http.Server, every request sent upstream with https.request on one keep-alive https.Agent and
// the answer piped back. No policy, no audit line, no header hygiene beyond dropping the client's
// hop-by-hop headers with portcullis' own stripHopByHop (a client's `Connection: close` must not
// close the pooled upstream connection). An upgrade (WebSocket) goes upstream with its headers as
// they came, and once the upstream switched, the two TLS sockets are piped to each other. What
// Node's own HTTP and TLS cost per request, tunnel, MB and message on this machine, for
// bench/cpu-split.ts and bench/run.ts (its "Node floor" table) to set portcullis against. A
// reference, never a peer. A benchmark child like the others (bench/lib.ts startChild): it
// reports its port and CA over IPC and exits when asked.
// Usage: startChild("Node floor", "peers/node-floor.ts", [CA_DIR, UPSTREAM_CA_FILE])   (after `npm run build`)
import http from "node:http";
import https from "node:https";
import { readFileSync } from "node:fs";
import type { LookupFunction } from "node:net";
import { createSecureContext, TLSSocket, type SecureContext } from "node:tls";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { serveParent } from "../lib.js";

type Authority = typeof import("../../src/ca/authority.js");
type ForgeLeaf = typeof import("../../src/ca/forge-leaf.js");
type Headers = typeof import("../../src/core/headers.js");
const { initCa, loadCa, caExists } = (await import(new URL("../../dist/ca/authority.js", import.meta.url).href)) as Authority;
const { forgeLeafCertificate } = (await import(new URL("../../dist/ca/forge-leaf.js", import.meta.url).href)) as ForgeLeaf;
const { stripHopByHop } = (await import(new URL("../../dist/core/headers.js", import.meta.url).href)) as Headers;

const [caDir, upstreamCaFile] = process.argv.slice(2);
if (!caDir || !upstreamCaFile) throw new Error("usage: node-floor.ts CA_DIR UPSTREAM_CA_FILE");
if (!(await caExists(caDir))) await initCa(caDir, { commonName: "node-floor bench CA" });
const ca = await loadCa(caDir);
const contexts = new Map<string, Promise<SecureContext>>();
const sni = (name: string, callback: (error: Error | null, context?: SecureContext) => void) => {
  let context = contexts.get(name);
  if (!context) contexts.set(name, (context = forgeLeafCertificate(ca, name).then((cert) => createSecureContext({ key: ca.leafKey.pem, cert }))));
  context.then((ready) => callback(null, ready), (error: Error) => callback(error));
};
// Every bench name is 127.0.0.1, as the other columns resolve it.
const lookup = ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) =>
  options.all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4)) as unknown as LookupFunction;
const agent = new https.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256, ca: readFileSync(upstreamCaFile, "utf8"), lookup });

function destination(req: http.IncomingMessage): { host: string; port: number } {
  const authority = req.headers.host ?? "";
  const colon = authority.lastIndexOf(":");
  return colon > 0 ? { host: authority.slice(0, colon), port: Number(authority.slice(colon + 1)) } : { host: authority, port: 443 };
}

const inner = http.createServer((req, res) => {
  const { host, port } = destination(req);
  const upstream = https.request({ host, port, servername: host, path: req.url, method: req.method, headers: stripHopByHop(req.rawHeaders), agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.statusMessage, answer.rawHeaders);
    answer.pipe(res);
  });
  upstream.on("error", () => res.destroy());
  req.pipe(upstream);
});
inner.on("upgrade", (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
  const { host, port } = destination(req);
  const upstream = https.request({ host, port, servername: host, path: req.url, method: req.method, headers: req.rawHeaders, agent });
  client.on("error", () => client.destroy());
  // Gone before the upstream switched: nothing is left to relay to.
  client.once("close", () => upstream.destroy());
  upstream.on("upgrade", (answer: http.IncomingMessage, socket: Duplex, upstreamHead: Buffer) => {
    let text = `HTTP/1.1 ${answer.statusCode} ${answer.statusMessage}\r\n`;
    for (let i = 0; i < answer.rawHeaders.length; i += 2) text += `${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}\r\n`;
    client.write(`${text}\r\n`);
    if (upstreamHead.length) client.write(upstreamHead);
    if (head.length) socket.write(head);
    socket.on("error", () => client.destroy());
    client.once("close", () => socket.destroy());
    socket.once("close", () => client.destroy());
    client.pipe(socket);
    socket.pipe(client);
  });
  // Refused: the answer is read to its end (so its socket goes back to the agent), and the client is cut.
  upstream.on("response", (answer: http.IncomingMessage) => {
    answer.resume();
    client.destroy();
  });
  upstream.on("error", () => client.destroy());
  upstream.end();
});
const outer = http.createServer();
outer.on("connect", (_req: http.IncomingMessage, socket: Socket) => {
  socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
  inner.emit("connection", new TLSSocket(socket, { isServer: true, SNICallback: sni, ALPNProtocols: ["http/1.1"] }));
});
outer.listen(0, "127.0.0.1", () => {
  const address = outer.address();
  if (!address || typeof address !== "object") throw new Error("node-floor: no address to listen on");
  // Nothing to drain on close: the bench has finished with it.
  serveParent({ type: "ready", port: address.port, caPem: ca.certPem }, {}, async () => undefined);
});
