// Memory under churn: portcullis (dist/, as `portcullis start` runs it) for DURATION seconds under a steady mix of
// new tunnels, keep-alive requests, WebSocket sessions and denials, its resident memory sampled
// every SAMPLE seconds. Prints the curve as a markdown table and the slope of its second half.
// Usage: node --import tsx bench/churn.ts   (after `npm run build`; CHURN_SECONDS=600 CHURN_SAMPLE_S=30;
//        CHURN_NODE_FLAGS="--initial-old-space-size=64" adds node flags to portcullis' process)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpsProxyAgent } from "https-proxy-agent";
import { ProxyAgent, request } from "undici";
import WebSocket from "ws";
import { BENCH_DOMAIN, startChild, type ChildMessage, type ProxyReady, log } from "./lib.js";

const SECONDS = Number(process.env.CHURN_SECONDS ?? 600);
const SAMPLE_S = Number(process.env.CHURN_SAMPLE_S ?? 30);
const WS_HOST = `ws.${BENCH_DOMAIN}`;
const work = mkdtempSync(join(tmpdir(), "portcullis-churn-"));

function rssKiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? 0);
}

const upstream = await startChild<ChildMessage & { port: number; caFile: string }>("upstream", "upstream-child.ts", [join(work, "upstream-ca"), [BENCH_DOMAIN, WS_HOST].join(",")]);
const policyFile = join(work, "policy.yaml");
writeFileSync(
  policyFile,
  [
    "version: 1",
    `ca: { dir: ${JSON.stringify(join(work, "ca"))} }`,
    `log: { audit: ${JSON.stringify(join(work, "audit.log"))}, level: warn }`,
    `upstream: { trust: [${JSON.stringify(upstream.ready.caFile)}], resolve: { ${JSON.stringify(BENCH_DOMAIN)}: 127.0.0.1, ${JSON.stringify(WS_HOST)}: 127.0.0.1 } }`,
    "network:",
    "  default: deny",
    "  allow_ips: [127.0.0.1/32]",
    `  rules: [{ name: bench, action: allow, hosts: ["*.${BENCH_DOMAIN}", ${JSON.stringify(BENCH_DOMAIN)}], ports: [${upstream.ready.port}] }]`,
    'admin: { listen: "127.0.0.1:0" }',
    "",
  ].join("\n"),
);
// portcullis-child.ts runs createProxy from dist/, as `portcullis start` does; --expose-gc lets
// the idle-tunnel figure count memory held rather than garbage not yet collected.
const portcullis = await startChild<ProxyReady>("portcullis", "portcullis-child.ts", [policyFile], {
  env: { NODE_OPTIONS: "--expose-gc" },
  nodeFlags: (process.env.CHURN_NODE_FLAGS ?? "").split(" ").filter(Boolean),
});
const proxy = portcullis.process;
const proxyPort = portcullis.ready.port;
type Retained = ChildMessage & { rss: number; heapUsed: number; external: number };
const retained = () => portcullis.ask<Retained>({ type: "retained" });
const proxyUrl = `http://127.0.0.1:${proxyPort}`;
const ca = portcullis.ready.caPem;
const origin = `https://${BENCH_DOMAIN}:${upstream.ready.port}`;
const keepAlive = new ProxyAgent({ uri: proxyUrl, requestTls: { ca }, connections: 4 });

const counts = { newTunnel: 0, keepAlive: 0, webSocket: 0, denied: 0, errors: 0 };
async function newTunnel(): Promise<void> {
  const agent = new ProxyAgent({ uri: proxyUrl, requestTls: { ca }, connections: 1 });
  try {
    await (await request(`${origin}/small`, { dispatcher: agent })).body.text();
    counts.newTunnel++;
  } finally {
    await agent.close();
  }
}
async function keptAlive(): Promise<void> {
  for (let i = 0; i < 20; i++) await (await request(`${origin}/small`, { dispatcher: keepAlive })).body.text();
  counts.keepAlive += 20;
}
async function denied(): Promise<void> {
  // A tunnel to a host no rule allows is refused on the CONNECT: undici reports that as an error.
  const refused = await request(`https://denied.example:${upstream.ready.port}/`, { dispatcher: keepAlive }).then(
    async (res) => (await res.body.text(), res.statusCode === 403),
    (error: Error) => /403/.test(String((error as Error & { cause?: unknown }).cause ?? error.message)),
  );
  if (!refused) throw new Error("a request to a denied host was not refused");
  counts.denied++;
}
function webSocket(): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${WS_HOST}:${upstream.ready.port}/echo`, { agent: new HttpsProxyAgent(proxyUrl, { ca }), ca });
    let echoed = 0;
    ws.on("open", () => ws.send(Buffer.alloc(1024, 1)));
    ws.on("message", () => (++echoed < 10 ? ws.send(Buffer.alloc(1024, 1)) : ws.close(1000)));
    ws.on("close", () => (counts.webSocket++, resolve()));
    ws.on("error", reject);
  });
}

// Idle tunnels first: IDLE_TUNNELS clients each open a tunnel, make one request and keep the
// connection open, in two equal batches; the proxy's memory before, between and after (each
// after a full GC) gives what an idle tunnel holds, and the two batches show that it is a cost per tunnel.
// The proxy is warmed up first, so that the figure leaves out what grows once and then stays: the
// young generation sized for keep-alive traffic, the JIT's code, the live view's ring of 500 records.
const IDLE_TUNNELS = Number(process.env.CHURN_IDLE_TUNNELS ?? 2000);
if (IDLE_TUNNELS === 1 || !Number.isInteger(IDLE_TUNNELS) || IDLE_TUNNELS < 0) throw new Error("CHURN_IDLE_TUNNELS: 0 to skip, or at least 2 (two batches)");
const WARM_UP = { tunnels: 50, requests: 1000 };
async function openIdleTunnels(count: number): Promise<ProxyAgent[]> {
  const agents = Array.from({ length: count }, () => new ProxyAgent({ uri: proxyUrl, requestTls: { ca }, connections: 1, keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 }));
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < agents.length) await (await request(`${origin}/small`, { dispatcher: agents[next++]! })).body.text();
  }));
  return agents;
}
async function idleTunnelCost(): Promise<string> {
  for (let i = 0; i < WARM_UP.tunnels; i++) await newTunnel();
  // After the closed tunnels, so that the proxy has long since seen them go when `before` is taken.
  for (let i = 0; i < WARM_UP.requests; i += 20) await keptAlive();
  const half = Math.floor(IDLE_TUNNELS / 2);
  const before = await retained();
  const agents = await openIdleTunnels(half);
  const between = await retained();
  agents.push(...(await openIdleTunnels(IDLE_TUNNELS - half)));
  const after = await retained();
  await Promise.all(agents.map((agent) => agent.close()));
  const kiB = (from: Retained, to: Retained, field: "rss" | "heapUsed" | "external", tunnels: number) => ((to[field] - from[field]) / 1024 / tunnels).toFixed(1);
  const mib = (at: Retained) => (at.rss / 1048576).toFixed(1);
  return (
    `${IDLE_TUNNELS} idle tunnels, after a warm-up and a full GC: ${kiB(before, after, "rss", IDLE_TUNNELS)} KiB RSS per idle tunnel ` +
    `(JS heap ${kiB(before, after, "heapUsed", IDLE_TUNNELS)} KiB, external ${kiB(before, after, "external", IDLE_TUNNELS)} KiB; ` +
    `first ${half}: ${kiB(before, between, "rss", half)} KiB each, next ${IDLE_TUNNELS - half}: ${kiB(between, after, "rss", IDLE_TUNNELS - half)} KiB each); ` +
    `RSS ${mib(before)} → ${mib(between)} → ${mib(after)} MiB`
  );
}
const idleLine = IDLE_TUNNELS > 0 ? await idleTunnelCost() : "idle tunnels: skipped";
log(idleLine);
for (const kind of Object.keys(counts) as (keyof typeof counts)[]) counts[kind] = 0; // the churn below counts its own work only

const kinds = [newTunnel, keptAlive, keptAlive, webSocket, denied];
const end = Date.now() + SECONDS * 1000;
const samples: { t: number; rss: number; total: number }[] = [{ t: 0, rss: rssKiB(proxy.pid!), total: 0 }];
const started = Date.now();
const sampler = setInterval(() => {
  const total = counts.newTunnel + counts.keepAlive + counts.webSocket + counts.denied;
  samples.push({ t: Math.round((Date.now() - started) / 1000), rss: rssKiB(proxy.pid!), total });
  log(`t=${samples.at(-1)!.t}s rss=${(samples.at(-1)!.rss / 1024).toFixed(1)} MiB ${JSON.stringify(counts)}`);
}, SAMPLE_S * 1000);
await Promise.all(
  Array.from({ length: 4 }, async (_, worker) => {
    for (let i = worker; Date.now() < end; i++) await kinds[i % kinds.length]!().catch(() => counts.errors++);
  }),
);
clearInterval(sampler);

// RSS saws up and down with the garbage collector: the trend is a least-squares line through the
// samples after the first minute (warm-up), with each half's range beside it.
const settled = samples.filter((s) => s.t >= 60);
const meanT = settled.reduce((sum, s) => sum + s.t, 0) / settled.length;
const meanRss = settled.reduce((sum, s) => sum + s.rss, 0) / settled.length;
const covariance = settled.reduce((sum, s) => sum + (s.t - meanT) * (s.rss - meanRss), 0);
const variance = settled.reduce((sum, s) => sum + (s.t - meanT) ** 2, 0);
const slope = variance > 0 ? ((covariance / variance) * 60) / 1024 : NaN;
const range = (part: typeof samples) => `${(Math.min(...part.map((s) => s.rss)) / 1024).toFixed(1)}–${(Math.max(...part.map((s) => s.rss)) / 1024).toFixed(1)} MiB`;
console.log(`# churn: ${SECONDS} s, 4 workers, ${JSON.stringify(counts)}`);
console.log(idleLine);
console.log("| t (s) | RSS (MiB) | events so far |\n| ---: | ---: | ---: |");
for (const s of samples) console.log(`| ${s.t} | ${(s.rss / 1024).toFixed(1)} | ${s.total} |`);
console.log(`trend after the first minute: ${slope.toFixed(2)} MiB/min (least squares); RSS first half ${range(settled.filter((s) => s.t < SECONDS / 2))}, second half ${range(settled.filter((s) => s.t >= SECONDS / 2))}`);
await keepAlive.close();
await portcullis.close();
await upstream.close();
rmSync(work, { recursive: true, force: true });
