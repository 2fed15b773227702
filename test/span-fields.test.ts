import { describe, expect, it } from "vitest";
import type { PublishedRecord } from "../src/log/audit-feed.js";
import { spanAttributes, spanError, spanName } from "../src/telemetry/span-fields.js";
import { tracesUrl } from "../src/telemetry/trace-export.js";

const base: PublishedRecord = {
  msg: "http", level: 30, time: 1_700_000_000_000, req_id: "r1", client: "agent", client_addr: "10.0.0.2", method: "POST", scheme: "https",
  host: "mcp.example", port: 443, path: "/mcp", status: 200, duration_ms: 12.5, req_bytes: 10, resp_bytes: 20, decision: "allow",
  rule: "mcp", reason: null, credentials: ["gh"], placeholders: [],
};

describe("span fields from an audit record", () => {
  it("flattens nested fields, keeps arrays, leaves out nulls, headers and the body sample", () => {
    const attributes = spanAttributes({ ...base, mcp: { method: "tools/call", tool: "run" }, req_headers: { authorization: "[REDACTED]" }, req_body: "{}", http_version: "2" });
    expect(attributes).toEqual({
      kind: "http", req_id: "r1", client: "agent", client_addr: "10.0.0.2", method: "POST", scheme: "https", host: "mcp.example", port: 443, path: "/mcp",
      status: 200, duration_ms: 12.5, req_bytes: 10, resp_bytes: 20, decision: "allow", rule: "mcp", credentials: ["gh"], placeholders: [],
      "mcp.method": "tools/call", "mcp.tool": "run", http_version: "2",
    });
  });

  it("names spans without the path, and marks only faults as errors", () => {
    expect(spanName(base)).toBe("POST mcp.example");
    expect(spanName({ ...base, msg: "tunnel", method: "CONNECT" })).toBe("CONNECT mcp.example");
    expect(spanError(base)).toBeUndefined();
    expect(spanError({ ...base, decision: "deny", status: 403, error: { type: "policy_denied", message: "no rule" } })).toBeUndefined();
    expect(spanError({ ...base, status: 404 })).toBeUndefined();
    expect(spanError({ ...base, status: 503 })).toBe("status 503");
    expect(spanError({ ...base, status: null, error: { type: "upstream_reset", message: "reset by peer" } })).toBe("reset by peer");
  });

  it("adds /v1/traces to a collector's base URL only", () => {
    expect(tracesUrl("http://127.0.0.1:4318")).toBe("http://127.0.0.1:4318/v1/traces");
    expect(tracesUrl("http://otel:4318/prefix/")).toBe("http://otel:4318/prefix/v1/traces");
    expect(tracesUrl("https://otel.example/v1/traces")).toBe("https://otel.example/v1/traces");
  });
});
