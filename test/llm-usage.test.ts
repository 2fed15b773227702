import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { gunzipSync } from "node:zlib";
import { JsonUsageReader, SseUsageReader, WebSocketUsageReader } from "../src/llm/usage.js";
import { fakeLlmHandler, jsonBody, PATHS, release, sseEvents, type Api, type FakeRequest } from "./helpers/fake-llm.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const APIS: Api[] = ["anthropic", "openai-chat", "openai-responses"];
const USAGE = { input: 1200, output: 345, cacheRead: 1000, cacheWrite: 77 };

/** Feeds bytes to a reader in pieces of `size` (UTF-8 characters and CRLFs split on purpose). */
function feed(reader: { push(chunk: Buffer): void; end(): void }, bytes: Buffer, size: number): void {
  for (let i = 0; i < bytes.length; i += size) reader.push(bytes.subarray(i, i + size));
  reader.end();
}

describe("usage read from recorded-shape answers", () => {
  it("Anthropic Messages JSON: input, output, cache read and cache write", () => {
    const reader = new JsonUsageReader("anthropic");
    feed(reader, Buffer.from(JSON.stringify(jsonBody("anthropic", "ls", "bash", USAGE))), 7);
    expect(reader.tally.usage).toEqual({ api: "anthropic", model: "claude-x", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000, cache_write_tokens: 77 });
  });

  it("OpenAI Chat Completions JSON: prompt and completion tokens, cached tokens", () => {
    const reader = new JsonUsageReader("openai-chat");
    feed(reader, Buffer.from(JSON.stringify(jsonBody("openai-chat", "ls", "bash", USAGE))), 5);
    expect(reader.tally.usage).toEqual({ api: "openai-chat", model: "gpt-x", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000 });
  });

  it("OpenAI Responses JSON", () => {
    const reader = new JsonUsageReader("openai-responses");
    feed(reader, Buffer.from(JSON.stringify(jsonBody("openai-responses", "ls", "bash", USAGE))), 3);
    expect(reader.tally.usage).toEqual({ api: "openai-responses", model: "gpt-r", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000 });
  });

  it("tells the API from the body when the path does not say", () => {
    const reader = new JsonUsageReader(undefined);
    feed(reader, Buffer.from(JSON.stringify(jsonBody("anthropic", "ls", "bash", USAGE))), 1 << 20);
    expect(reader.tally.usage?.api).toBe("anthropic");
  });

  const expected: Record<Api, object> = {
    anthropic: { api: "anthropic", model: "claude-x", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000, cache_write_tokens: 77 },
    "openai-chat": { api: "openai-chat", model: "gpt-x", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000 },
    "openai-responses": { api: "openai-responses", model: "gpt-r", input_tokens: 1200, output_tokens: 345, cache_read_tokens: 1000 },
  };

  for (const api of APIS) {
    it(`${api} SSE: the same usage whatever the chunk boundaries (1 to 64 bytes, CRLF line ends)`, () => {
      const { text, rest } = sseEvents(api, "ls ✓", "bash", USAGE);
      const lf = Buffer.from([...text, ...rest].join(""));
      const crlf = Buffer.from([...text, ...rest].join("").replace(/\n/g, "\r\n"));
      for (const bytes of [lf, crlf]) {
        for (const size of [1, 2, 3, 5, 7, 13, 64]) {
          const reader = new SseUsageReader(api);
          feed(reader, bytes, size);
          expect(reader.tally.usage, `${size}-byte pieces`).toEqual(expected[api]);
        }
      }
    });
  }

  it("Anthropic SSE: message_delta's cumulative counts replace message_start's", () => {
    const reader = new SseUsageReader("anthropic");
    const events = [
      `event: message_start\ndata: {"type":"message_start","message":{"model":"claude-y","usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}\n\n`,
      `event: message_delta\ndata: {"type":"message_delta","delta":{},"usage":{"output_tokens":15}}\n\n`,
      `event: message_delta\ndata: {"type":"message_delta","delta":{},"usage":{"output_tokens":30}}\n\n`,
    ];
    feed(reader, Buffer.from(events.join("")), 4);
    expect(reader.tally.usage).toEqual({ api: "anthropic", model: "claude-y", input_tokens: 10, output_tokens: 30, cache_read_tokens: 4 });
  });

  it("a stream without usage reports the model only; garbage reports nothing", () => {
    const reader = new SseUsageReader("openai-chat");
    feed(reader, Buffer.from(`data: {"object":"chat.completion.chunk","model":"m","choices":[]}\n\ndata: [DONE]\n\n`), 3);
    expect(reader.tally.usage).toEqual({ api: "openai-chat", model: "m" });
    const junk = new JsonUsageReader("anthropic");
    feed(junk, Buffer.from("{not json"), 2);
    expect(junk.tally.usage).toBeUndefined();
  });

  it("Realtime: each response.done's usage, summed over the session, model from session.created", () => {
    const reader = new WebSocketUsageReader("openai-realtime");
    expect(reader.push(JSON.stringify({ type: "session.created", session: { model: "gpt-realtime" } }))).toBeUndefined();
    expect(reader.push(JSON.stringify({ type: "response.output_audio_transcript.delta", delta: "hi" }))).toBeUndefined();
    const first = reader.push(JSON.stringify({ type: "response.done", response: { usage: { total_tokens: 30, input_tokens: 20, output_tokens: 10, input_token_details: { cached_tokens: 8 } } } }));
    expect(first).toEqual({ api: "openai-realtime", model: "gpt-realtime", input_tokens: 20, output_tokens: 10, cache_read_tokens: 8 });
    reader.push(JSON.stringify({ type: "response.done", response: { usage: { input_tokens: 5, output_tokens: 1, input_token_details: { cached_tokens: 0 } } } }));
    expect(reader.usage).toEqual({ api: "openai-realtime", model: "gpt-realtime", input_tokens: 25, output_tokens: 11, cache_read_tokens: 8 });
  });

  it("Responses WebSocket mode: response.completed carries usage and model", () => {
    const reader = new WebSocketUsageReader("openai-responses");
    const done = reader.push(JSON.stringify({ type: "response.completed", response: { model: "gpt-r", usage: { input_tokens: 3, output_tokens: 4 } } }));
    expect(done).toEqual({ api: "openai-responses", model: "gpt-r", input_tokens: 3, output_tokens: 4 });
  });
});

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream(fakeLlmHandler, pki);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `clients:
  - { name: agent-1, token: { env: USAGE_TEST_TOKEN_1 } }
  - { name: agent-2, token: { env: USAGE_TEST_TOKEN_2 } }
budgets:
  rules:
    - name: tokens-hourly
      hosts: [localhost]
      paths: ["/v1/**"]
      tokens: 1000
      window: 1h
`,
      "network:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n",
    ),
    { adminListen: "127.0.0.1:0" },
  );
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

process.env.USAGE_TEST_TOKEN_1 = "token-one";
process.env.USAGE_TEST_TOKEN_2 = "token-two";

function dispatcherFor(client: string, token: string, allowH2 = false) {
  return new ProxyAgent({
    uri: proxy.url,
    token: `Basic ${Buffer.from(`${client}:${token}`).toString("base64")}`,
    requestTls: { ca: proxy.caPem, allowH2 },
  });
}

async function ask(dispatcher: ProxyAgent, api: Api, body: FakeRequest, requestId: string, headers: Record<string, string> = {}) {
  return request(`https://localhost:${upstream.port}${PATHS[api]}`, {
    method: "POST",
    dispatcher,
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", "x-request-id": requestId, ...headers },
  });
}

describe("usage through the proxy", () => {
  it("writes the llm field for each API, JSON and SSE, gzip and br, the client getting the compressed bytes as sent", async () => {
    const one = dispatcherFor("agent-2", "token-two");
    try {
      for (const api of APIS) {
        for (const stream of [false, true]) {
          for (const encoding of ["gzip", "br"] as const) {
            const id = `usage-${api}-${stream}-${encoding}`;
            const res = await ask(one, api, { stream, encoding, chunk: 11, usage: { input: 2, output: 3, cacheRead: 1 } }, id, { "accept-encoding": "gzip, br" });
            expect(res.statusCode).toBe(200);
            expect(res.headers["content-encoding"]).toBe(encoding);
            const raw = Buffer.from(await res.body.arrayBuffer());
            if (encoding === "gzip") expect(gunzipSync(raw).toString()).toContain(stream ? "data:" : '"usage"');
            const line = await proxy.audit.waitFor((l) => l.req_id === id);
            expect(line.llm, id).toMatchObject({ api, input_tokens: 2, output_tokens: 3, cache_read_tokens: 1 });
          }
        }
      }
    } finally {
      await one.close();
    }
  });

  it("reads usage over h2 too", async () => {
    const h2 = dispatcherFor("agent-2", "token-two", true);
    try {
      const res = await ask(h2, "anthropic", { stream: true, usage: { input: 4, output: 6 } }, "usage-h2");
      await res.body.text();
      const line = await proxy.audit.waitFor((l) => l.req_id === "usage-h2");
      expect(line).toMatchObject({ http_version: "2", llm: { api: "anthropic", model: "claude-x", input_tokens: 4, output_tokens: 6 } });
    } finally {
      await h2.close();
    }
  });

  it("lets a response in flight finish whole when it crosses the budget; the next request gets 429 in the API's shape; another client is unaffected", async () => {
    const one = dispatcherFor("agent-1", "token-one");
    const two = dispatcherFor("agent-1", "token-one");
    const other = dispatcherFor("agent-2", "token-two");
    try {
      // 900 tokens: under the 1000 limit, not spent.
      const first = await ask(one, "openai-chat", { usage: { input: 800, output: 100 } }, "budget-1");
      await first.body.text();
      await proxy.audit.waitFor((l) => l.req_id === "budget-1");
      // A stream admitted at 900 reports 600 more: it is never cut.
      const streaming = await ask(one, "anthropic", { stream: true, hold: "in-flight", usage: { input: 500, output: 100 } }, "budget-2");
      expect(streaming.statusCode).toBe(200);
      release("in-flight");
      const text = await streaming.body.text();
      expect(text).toContain("message_stop");
      expect(text).toContain('"output_tokens":100');
      await proxy.audit.waitFor((l) => l.req_id === "budget-2");
      // Charged asynchronously after the answer ended: wait until /budgets shows it.
      const admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}/budgets`;
      let rows: { rule: string; client: string; tokens: number; requests: number; limit_tokens: number; limit_requests: number | null; window_start: string }[] = [];
      for (let i = 0; i < 100 && !(rows.find((r) => r.client === "agent-1")?.tokens === 1500); i++) {
        rows = (await (await request(admin)).body.json()) as typeof rows;
        if (rows.find((r) => r.client === "agent-1")?.tokens !== 1500) await new Promise((r) => setImmediate(r));
      }
      const mine = rows.find((r) => r.client === "agent-1")!;
      expect(mine).toMatchObject({ rule: "tokens-hourly", tokens: 1500, requests: 2, limit_tokens: 1000, limit_requests: null });
      expect(new Date(mine.window_start).getTime() % 3_600_000).toBe(0);

      for (const api of APIS) {
        const denied = await ask(two, api, {}, `budget-429-${api}`);
        expect(denied.statusCode).toBe(429);
        expect(denied.headers["x-portcullis-error"]).toBe("budget_exceeded");
        const retryAfter = Number(denied.headers["retry-after"]);
        expect(retryAfter).toBeGreaterThan(0);
        expect(retryAfter).toBeLessThanOrEqual(3600);
        const body = (await denied.body.json()) as { type?: string; error: { type: string; rule: string; message: string; code?: string } };
        expect(body.error).toMatchObject({ type: "budget_exceeded", rule: "tokens-hourly" });
        if (api === "anthropic") expect(body.type).toBe("error");
        else expect(body.error.code).toBe("budget_exceeded");
        const line = await proxy.audit.waitFor((l) => l.req_id === `budget-429-${api}`);
        expect(line).toMatchObject({ msg: "denied", decision: "deny", rule: "tokens-hourly", status: 429, client: "agent-1" });
      }
      // Nothing of the refused requests reached the upstream: the counter did not move.
      rows = (await (await request(admin)).body.json()) as typeof rows;
      expect(rows.find((r) => r.client === "agent-1")).toMatchObject({ tokens: 1500, requests: 2 });

      const fine = await ask(other, "openai-responses", { usage: { input: 1, output: 1 } }, "budget-other");
      expect(fine.statusCode).toBe(200);
      await fine.body.text();
    } finally {
      await Promise.all([one.close(), two.close(), other.close()]);
    }
  });

  it("counts tokens and requests in /metrics by client and model", async () => {
    const admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}/metrics`;
    const text = await (await request(admin)).body.text();
    expect(text).toMatch(/portcullis_llm_tokens_total\{client="agent-1",model="gpt-x",kind="input"\} 800/);
    expect(text).toMatch(/portcullis_llm_tokens_total\{client="agent-1",model="claude-x",kind="output"\} 100/);
    expect(text).toMatch(/portcullis_llm_requests_total\{client="agent-1",model="claude-x"\} 1/);
    expect(text).toMatch(/portcullis_llm_requests_total\{client="agent-2",model="gpt-r"\} \d+/);
  });

  it("reads usage too where an llm rule holds JSON answers and guards streams (the body decoded for the client)", async () => {
    const guarded = await startProxy(
      policyTrusting(pki.caFile, `llm:\n  - name: never\n    hosts: [localhost]\n    deny_tools: [{ tool: never_called }]\n`),
    );
    try {
      for (const [api, stream, encoding] of [["openai-chat", false, "gzip"], ["anthropic", true, "br"], ["openai-responses", true, "deflate"]] as const) {
        const id = `guarded-${api}`;
        const res = await request(`https://localhost:${upstream.port}${PATHS[api]}`, {
          method: "POST",
          dispatcher: guarded.dispatcher,
          body: JSON.stringify({ stream, encoding, chunk: 5, usage: { input: 7, output: 8 } }),
          headers: { "content-type": "application/json", "x-request-id": id, "accept-encoding": "gzip, br, deflate" },
        });
        expect(res.statusCode).toBe(200);
        await res.body.text();
        expect((await guarded.audit.waitFor((l) => l.req_id === id)).llm).toMatchObject({ api, input_tokens: 7, output_tokens: 8 });
      }
    } finally {
      await guarded.close();
    }
  });
});
