import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { Exchange } from "../src/core/exchange.js";
import type { InboundRequest, Upstream } from "../src/core/messages.js";
import { Identities } from "../src/credentials/identity.js";
import { SecretStore } from "../src/credentials/secrets.js";
import { Scrubber } from "../src/log/scrub.js";
import type { PolicyState } from "../src/pipeline/context.js";
import type { Flow } from "../src/pipeline/stage.js";
import { activeStages } from "../src/pipeline/active-stages.js";
import { STAGES } from "../src/pipeline/stages.js";
import { DestinationGuard } from "../src/policy/destinations.js";
import { parsePolicy } from "../src/policy/load.js";
import { pathReadings } from "../src/policy/paths.js";

const UNUSED_UPSTREAM: Upstream = {
  send: () => {
    throw new Error("not sent in this test");
  },
  dial: () => {
    throw new Error("not dialled in this test");
  },
  destroy: () => undefined,
};

// Credentials, placeholders, llm, mcp and budget rules for other hosts: every stage has something to look at, none applies.
const POLICY = `
version: 1
network:
  default: deny
  rules: [{ name: api, action: allow, hosts: [api.example.test] }]
secrets:
  gh: { env: PCX_SYNC_TEST_GH }
credentials:
  - name: github
    hosts: [api.github.com]
    header: { name: Authorization, value: "Bearer \${secrets.gh}" }
  - name: aws
    hosts: [s3.us-east-1.amazonaws.com]
    aws_sigv4: { access_key_id: { env: PCX_SYNC_TEST_AKID }, secret_access_key: { env: PCX_SYNC_TEST_AWS } }
llm:
  - name: no-rm
    hosts: [api.anthropic.com]
    deny_tools: [{ tool: bash }]
mcp:
  - name: tools
    hosts: [mcp.example.test]
    allow_tools: [echo]
`;

function flowFor(policyText: string, host: string, path: string): Flow {
  const { policy } = parsePolicy(policyText);
  const scrubber = new Scrubber();
  const secrets = new SecretStore(policy.secrets, scrubber);
  const state: PolicyState = {
    policy,
    guard: new DestinationGuard(policy.network.private_destinations, policy.network.allow_ips),
    upstream: UNUSED_UPSTREAM,
    passthrough: policy.passthrough.hosts,
    secrets,
    identities: new Identities(policy.clients, secrets),
  };
  const tunnel = { host, port: 443, client: null, clientAddr: "127.0.0.1" };
  const headers = ["Host", host, "Accept", "*/*"];
  const request: InboundRequest = {
    httpVersion: "1.1",
    method: "GET",
    target: path,
    authorities: [host],
    headers,
    tunnel,
    secure: true,
    clientAddr: "127.0.0.1",
    upgrade: undefined,
    hasBody: false,
    body: Readable.from([]),
    trailers: () => [],
  };
  const exchange = new Exchange("sync-test", tunnel, { scheme: "https", host, port: 443 }, "GET", path, headers, "1.1");
  exchange.pathReadings = pathReadings(path);
  return { exchange, request, outgoing: { method: "GET", path, headers, hasBody: false }, state, hooks: [], stages: STAGES, hostHeader: undefined, upgrade: false, readBody: false, notes: {} };
}

describe("the request phases of a request no stage applies to", () => {
  it("are synchronous in every stage: the runner has nothing to await before it forwards", () => {
    const flow = flowFor(POLICY, "api.example.test", "/v1/items?page=2");
    for (const stage of STAGES) {
      for (const phase of ["requestHeaders", "request", "beforeForward"] as const) {
        const hook = stage[phase] as ((flow: Flow) => unknown) | undefined;
        const returned = hook?.(flow);
        expect(returned, `${stage.name}.${phase}`).toBeUndefined();
      }
    }
    expect(flow.exchange.decision).toBe("allow");
    expect(flow.readBody).toBe(false);
  });

  it("leave its response alone: no stage awaits, taps or transforms it, so the body is relayed as it comes", () => {
    const flow = flowFor(POLICY, "api.example.test", "/v1/items");
    const headers = ["Content-Type", "application/json", "Content-Length", "2"];
    const upstream = { httpVersion: "1.1" as const, status: 200, headOnly: false, reason: "OK", headers, body: Readable.from([Buffer.from("{}")]), complete: true, trailers: () => [] };
    const answer = { status: 200, reason: "OK", headers };
    for (const stage of STAGES) {
      stage.responseHeaders?.(flow, answer, upstream);
      expect(stage.responseBody?.(flow, answer, upstream), `${stage.name}.responseBody`).toBeUndefined();
      expect(stage.response?.(flow, answer), `${stage.name}.response`).toBeUndefined();
    }
  });

  it("await only when one does: an aws_sigv4 credential that applies signs asynchronously", () => {
    const flow = flowFor(POLICY, "s3.us-east-1.amazonaws.com", "/bucket/key");
    const signing = STAGES.find((stage) => stage.name === "aws-sigv4")!.beforeForward!(flow);
    expect(signing).toBeInstanceOf(Promise);
    // The keys' environment variables are not set: the signing fails as credential_unavailable, not silently.
    return expect(signing).rejects.toMatchObject({ type: "credential_unavailable" });
  });

  it("leave out of every phase the stages a policy gives nothing to do, and keep those it does", () => {
    const names = (policyText: string) => activeStages(flowFor(policyText, "api.example.test", "/").state).map((stage) => stage.name);
    const bare = "version: 1\nnetwork:\n  default: deny\n  rules: [{ name: api, action: allow, hosts: [api.example.test] }]\n";
    // Header hygiene, the policy decision, echo scrubbing (fail closed: it never asks whether a secret could be on the request)
    // and the programmatic hooks (they may be added while the proxy runs) always run.
    expect(names(bare)).toEqual(["header-hygiene", "policy", "echo-scrub", "hooks"]);
    expect(names(POLICY)).toEqual(["header-hygiene", "credentials", "policy", "llm", "mcp", "budgets", "echo-scrub", "hooks", "aws-sigv4"]);
    const extra = `${bare}placeholders:\n  - name: p\n    placeholder: PLACEHOLDER_VALUE_1\n    secret: s\n    hosts: [api.example.test]\nsecrets:\n  s: { env: PCX_SYNC_TEST_S }\nresponses:\n  - name: r\n    hosts: [api.example.test]\n    set_headers: { X-A: b }\nwebsocket:\n  - name: w\n    hosts: [api.example.test]\n    inspect: true\n`;
    expect(names(extra)).toEqual(["header-hygiene", "placeholders", "policy", "response-rules", "echo-scrub", "websocket-rules", "hooks"]);
    // Built once per policy state: every exchange under it shares the list.
    const { state } = flowFor(POLICY, "api.example.test", "/");
    expect(activeStages(state)).toBe(activeStages(state));
  });
});
