import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { ProxyAgent, request } from "undici";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import WebSocket from "ws";
import { HttpsProxyAgent } from "https-proxy-agent";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";

const CHROMIUM = "/usr/bin/chromium";
const ADMIN_TOKEN = "ui-browser-admin-token-93d1";
const TOKENS = { "agent-a": "agent-a-proxy-token-1f2e", "agent-b": "agent-b-proxy-token-8c4d" };
process.env.PORTCULLIS_UI_ADMIN = ADMIN_TOKEN;
process.env.PORTCULLIS_UI_AGENT_A = TOKENS["agent-a"];
process.env.PORTCULLIS_UI_AGENT_B = TOKENS["agent-b"];

let pki: ServerPki;
let upstream: TestWsUpstream;
let proxy: TestProxy;
let browser: Browser;
let page: Page;
let admin: string;
const dir = tempDir("ui-browser");
const agents: ProxyAgent[] = [];
const requested: string[] = [];
const consoleErrors: string[] = [];

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req, res) => {
    req.resume();
    if (req.url?.startsWith("/ok/missing")) return void res.writeHead(404).end("missing");
    res.end("hello from upstream");
  });
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `admin: { token: { env: PORTCULLIS_UI_ADMIN } }\nclients:\n  - { name: agent-a, token: { env: PORTCULLIS_UI_AGENT_A } }\n  - { name: agent-b, token: { env: PORTCULLIS_UI_AGENT_B } }\n`,
      `network:\n  default: deny\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: local, action: allow, hosts: [localhost], ports: [${upstream.port}], paths: ["/ok/**"] }\n`,
    ),
    { adminListen: "127.0.0.1:0" },
  );
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}`;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: join(dir, "chromium-profile"),
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  page.on("request", (req) => requested.push(req.url()));
  page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  for (const agent of agents) await agent.close();
  await proxy?.close();
  await upstream?.close();
});

async function send(client: keyof typeof TOKENS, path: string): Promise<number> {
  const dispatcher = new ProxyAgent({ uri: proxy.url, token: `Bearer ${TOKENS[client]}`, requestTls: { ca: proxy.caPem } });
  agents.push(dispatcher);
  const res = await request(`https://localhost:${upstream.port}${path}`, { dispatcher });
  await res.body.text();
  return res.statusCode;
}

type Row = { client: string; decision: string; status: string; method: string; url: string; duration: string; bytes: string; why: string; time: string };

function rows(): Promise<Row[]> {
  return page.$$eval("#rows tr", (trs) =>
    trs.map((tr) => {
      const text = (cls: string) => tr.querySelector(`.${cls}`)?.textContent ?? "";
      return { client: text("c-client"), decision: text("c-decision"), status: text("c-status"), method: text("c-method"), url: text("c-url"), duration: text("c-duration"), bytes: text("c-bytes"), why: text("c-why"), time: text("c-time") };
    }),
  );
}

async function setFilter(selector: string, value: string): Promise<void> {
  await page.$eval(selector, (input, v) => {
    (input as HTMLInputElement).value = v;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }, value);
}

describe("/ui in a real browser (Debian chromium, headless)", () => {
  it("shows the live stream with the right fields, filters like tail, counters, and no resource from elsewhere", { timeout: 60_000 }, async () => {
    expect(existsSync(CHROMIUM)).toBe(true);
    const answer = await page.goto(`${admin}/ui?token=${ADMIN_TOKEN}`, { waitUntil: "domcontentloaded" });
    expect(answer?.status()).toBe(200);
    expect(page.url()).toBe(`${admin}/ui`); // the token left the address bar
    await page.waitForFunction(() => document.getElementById("conn")?.textContent === "live", { timeout: 10_000 });

    expect(await send("agent-a", "/ok/first")).toBe(200);
    expect(await send("agent-b", "/forbidden/thing")).toBe(403);
    expect(await send("agent-a", "/ok/missing")).toBe(404);
    await page.waitForFunction(() => document.querySelectorAll("#rows tr").length >= 3, { timeout: 10_000 });

    const all = await rows();
    const allowed = all.find((r) => r.url.endsWith("/ok/first"))!;
    expect(allowed).toMatchObject({ client: "agent-a", decision: "allow", status: "200", method: "GET", url: `localhost:${upstream.port}/ok/first`, why: "local" });
    expect(allowed.time).toMatch(/^\d{2}:\d{2}:\d{2}$/);
    expect(allowed.duration).toMatch(/^\d+$/);
    expect(allowed.bytes).toBe(`0 / ${"hello from upstream".length}`);
    const denied = all.find((r) => r.url.endsWith("/forbidden/thing"))!;
    expect(denied).toMatchObject({ client: "agent-b", decision: "deny", status: "403", method: "GET" });
    expect(denied.why.length).toBeGreaterThan(3);
    expect(all[0]!.url).toContain("/ok/missing"); // newest first

    await page.click("#filter-denied");
    expect((await rows()).map((r) => r.decision)).toEqual(["deny"]);
    await page.click("#filter-denied");
    await setFilter("#filter-client", "agent-b");
    expect((await rows()).map((r) => r.url)).toEqual([`localhost:${upstream.port}/forbidden/thing`]);
    await setFilter("#filter-client", "");
    await setFilter("#filter-status", "4xx");
    expect((await rows()).map((r) => r.status).sort()).toEqual(["403", "404"]);
    await setFilter("#filter-status", "200");
    expect((await rows()).map((r) => r.status)).toEqual(["200"]);
    await setFilter("#filter-status", "");
    await setFilter("#filter-host", "*.example.org");
    expect(await rows()).toEqual([]);
    expect(await page.$eval("#stat-shown", (el) => el.textContent)).toBe("0");
    await setFilter("#filter-host", "localhost");
    expect((await rows()).length).toBe(3);

    // Counters arrive with the periodic stats event.
    await page.waitForFunction(() => document.querySelector('#by-client tr[data-name="agent-a"] .total')?.textContent === "2", { timeout: 10_000 });
    const counter = (table: string, name: string) =>
      page.$eval(`${table} tr[data-name="${name}"]`, (tr) => ({ total: tr.querySelector(".total")!.textContent, denied: tr.querySelector(".denied")!.textContent }));
    expect(await counter("#by-client", "agent-b")).toEqual({ total: "1", denied: "1" });
    expect(await counter("#by-host", "localhost")).toEqual({ total: "3", denied: "1" });
    expect(await page.$eval("#stat-total", (el) => el.textContent)).toBe("3");
    expect(await page.$eval("#stat-tunnels", (el) => el.textContent)).toMatch(/^\d+$/);
    expect(await page.$eval("#stat-websockets", (el) => el.textContent)).toBe("0");
    const wsAgent = new HttpsProxyAgent(proxy.url, { headers: { "Proxy-Authorization": `Bearer ${TOKENS["agent-a"]}` } });
    const ws = new WebSocket(`wss://localhost:${upstream.port}/ok/ws`, { agent: wsAgent, ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    await page.waitForFunction(() => document.getElementById("stat-websockets")?.textContent === "1", { timeout: 10_000 });
    ws.close();
    await page.waitForFunction(() => [...document.querySelectorAll("#rows .c-method")].some((td) => td.textContent === "WS"), { timeout: 10_000 });
    wsAgent.destroy();
    expect(await page.$eval("#budgets", (el) => (el as HTMLElement).hidden)).toBe(true); // no budgets configured

    const screenshot = join(dir, "ui.png");
    await page.screenshot({ path: screenshot, fullPage: true });
    expect(statSync(screenshot).size).toBeGreaterThan(5_000);

    expect(requested.filter((url) => !url.startsWith(`${admin}/`))).toEqual([]);
    expect(consoleErrors.filter((text) => !/budgets.*404|404.*budgets|Failed to load resource/.test(text))).toEqual([]);
    const html = await page.content();
    for (const secret of [ADMIN_TOKEN, ...Object.values(TOKENS)]) expect(html).not.toContain(secret);
  });
});
