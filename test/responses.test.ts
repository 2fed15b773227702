import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let releaseStream!: () => void;
const streamReleased = new Promise<void>((resolve) => (releaseStream = resolve));

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    req.resume();
    const page = "<a href=\"https://internal.corp/docs\">docs</a>\n<img src='https://internal.corp/x.png'>\n";
    if (req.url === "/page") {
      res.writeHead(200, [["Content-Type", "text/html"], ["Set-Cookie", "session=1"], ["Set-Cookie", "tracking=2"], ["X-Keep", "yes"], ["Server", "internal-build-42"]].flat());
      res.end(page);
    } else if (req.url === "/gz") {
      const body = gzipSync(page);
      res.writeHead(200, { "Content-Type": "text/html", "Content-Encoding": "gzip", "Content-Length": String(body.length) });
      res.end(body);
    } else if (req.url === "/stream") {
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.write("data: see https://internal.corp/a\n\n");
      void streamReleased.then(() => res.end("data: and https://internal.corp/b\n\n"));
    } else if (req.url === "/binary") {
      res.writeHead(200, { "Content-Type": "application/octet-stream" });
      res.end(Buffer.from("https://internal.corp/raw"));
    } else {
      res.writeHead(200, { "Content-Type": "text/plain", "Set-Cookie": "other=1" });
      res.end("https://internal.corp/elsewhere\n");
    }
  }, pki);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `responses:
  - name: no-cookies
    hosts: [localhost]
    paths: ["/page", "/gz", "/stream", "/binary"]
    remove_headers: [Set-Cookie, server]
    set_headers: { X-Filtered-By: portcullis }
  - name: public-urls
    hosts: [localhost]
    paths: ["/page", "/gz", "/stream", "/binary"]
    replace:
      - { pattern: "https://internal\\\\.corp/", with: "https://docs.example.com/" }
`,
    ),
  );
});

afterAll(async () => {
  releaseStream();
  await proxy?.close();
  await upstream?.close();
});

const get = (path: string) => request(`https://localhost:${upstream.port}${path}`, { dispatcher: proxy.dispatcher });

describe("response transformers", () => {
  it("removes and sets headers and rewrites text bodies", async () => {
    const res = await get("/page");
    expect(res.headers["set-cookie"]).toBeUndefined();
    expect(res.headers.server).toBeUndefined();
    expect(res.headers["x-keep"]).toBe("yes");
    expect(res.headers["x-filtered-by"]).toBe("portcullis");
    const text = await res.body.text();
    expect(text).toBe("<a href=\"https://docs.example.com/docs\">docs</a>\n<img src='https://docs.example.com/x.png'>\n");
  });

  it("decodes a compressed body to rewrite it", async () => {
    const res = await get("/gz");
    expect(res.headers["content-encoding"]).toBeUndefined();
    expect(await res.body.text()).toContain("https://docs.example.com/docs");
  });

  it("rewrites a stream line by line without holding it back", async () => {
    const res = await get("/stream");
    const iterator = res.body[Symbol.asyncIterator]();
    let seen = "";
    while (!seen.includes("\n\n")) seen += Buffer.from((await iterator.next()).value as Buffer).toString();
    expect(seen).toBe("data: see https://docs.example.com/a\n\n");
    releaseStream();
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) seen += Buffer.from(next.value as Buffer).toString();
    expect(seen).toContain("data: and https://docs.example.com/b\n\n");
  });

  it("leaves binary bodies and other paths alone", async () => {
    expect(await (await get("/binary")).body.text()).toBe("https://internal.corp/raw");
    const other = await get("/other");
    expect(other.headers["set-cookie"]).toBe("other=1");
    expect(await other.body.text()).toBe("https://internal.corp/elsewhere\n");
  });
});
