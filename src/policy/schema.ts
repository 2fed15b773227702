import { z } from "zod";
import { duration } from "./duration-schema.js";
import { noProxyProblem, parseParentProxyUrl } from "./parent-proxy.js";
import { secretSource } from "./secret-source-schema.js";
import { parseWindow } from "./window.js";

export { secretSource };


const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'expected "HOST:PORT", e.g. "127.0.0.1:8080"');

const hostName = z.string().min(1).regex(/^[^\s/]+$/, "expected a host name or IP address");

export const proxySection = z.strictObject({
  listen: hostPort.default("127.0.0.1:8080"),
  /** Offer h2 to clients (ALPN h2, http/1.1; the h2 preface on plain tunnels); false: HTTP/1.1 only. */
  http2: z.boolean().default(true),
  /** Streams one client connection may have open at once (h2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  max_concurrent_streams: z.number().int().min(1).max(10_000).default(100),
});

export const caSection = z.strictObject({
  dir: z.string().min(1).default("certs"),
});


export const logSection = z.strictObject({
  audit: z.string().min(1).default("-"),
  level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  capture_body_bytes: z.number().int().min(0).max(1_048_576).default(4096),
});

export const passthroughSection = z.strictObject({
  hosts: z.array(hostName).default([]),
});

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "expected a name of letters, digits, '_', '.', '-'");

const parentProxyUrl = z.string().transform((text, ctx) => {
  const parsed = parseParentProxyUrl(text);
  if (typeof parsed !== "string") return parsed;
  ctx.addIssue({ code: "custom", message: parsed });
  return z.NEVER;
});

/** `http://[user:pass@]HOST:PORT`, or `{ url, username, password: <secret source> }` to keep the password out of the file. */
export const parentProxySchema = z.union([
  parentProxyUrl,
  z
    .strictObject({ url: parentProxyUrl, username: z.string().min(1).optional(), password: secretSource })
    .transform(({ url, username, password }, ctx) => {
      if (url.password !== undefined) ctx.addIssue({ code: "custom", message: "the password is given twice: in the url and as password" });
      return { host: url.host, port: url.port, username: username ?? url.username, password };
    }),
]);

const noProxyEntry = z.string().superRefine((entry, ctx) => {
  const problem = noProxyProblem(entry);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

export const upstreamSection = z.strictObject({
  trust: z.array(z.string().min(1)).default([]),
  connect_timeout: duration.default(10_000),
  response_timeout: duration.default(300_000),
  resolve: z.record(hostName, z.string().min(1)).default({}),
  /** A parent (corporate) proxy every upstream connection goes through: CONNECT for TLS, absolute form for plain HTTP. */
  proxy: parentProxySchema.optional(),
  /** Destinations reached directly, not through `proxy`. */
  no_proxy: z.array(noProxyEntry).default([]),
});

/** "api.github.com", "*.githubusercontent.com" or an IP address. */
const hostPattern = z.string().regex(/^(\*\.)?[^\s*/:@]+\.?$|^\[?[0-9a-fA-F:.]+\]?$/, 'expected a host name, "*.suffix" or an IP address');
const port = z.number().int().min(1).max(65535);
const method = z.string().regex(/^[A-Za-z]+$/, "expected an HTTP method").transform((text) => text.toUpperCase());
const pathGlob = z.string().startsWith("/", 'expected a path glob starting with "/"');
const cidr = z.string().min(1);

export const clientSchema = z.strictObject({ name, token: secretSource });

export const ruleSchema = z.strictObject({
  name,
  action: z.enum(["allow", "deny"]),
  hosts: z.array(hostPattern).min(1),
  ports: z.array(port).min(1).optional(),
  methods: z.array(method).min(1).optional(),
  paths: z.array(pathGlob).min(1).optional(),
  clients: z.array(name).min(1).optional(),
});

export const networkSection = z.strictObject({
  default: z.enum(["deny", "allow"]).default("deny"),
  private_destinations: z.enum(["deny", "allow"]).default("deny"),
  allow_ips: z.array(cidr).default([]),
  rules: z.array(ruleSchema).default([]),
});

const nameValue = z.strictObject({ name: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "expected a header or parameter name"), value: z.string() });

const schemes = z.array(z.enum(["http", "https"])).min(1).default(["https"]);

/** AWS Signature Version 4: the sandbox signs with a placeholder key, portcullis re-signs with this one. */
export const awsSigv4Schema = z.strictObject({
  access_key_id: secretSource,
  secret_access_key: secretSource,
  session_token: secretSource.optional(),
});

export const credentialSchema = z
  .strictObject({
    name,
    hosts: z.array(hostPattern).min(1),
    paths: z.array(pathGlob).min(1).optional(),
    header: nameValue.optional(),
    query: nameValue.optional(),
    aws_sigv4: awsSigv4Schema.optional(),
    /** A secret never travels in cleartext unless `http` is listed. */
    schemes: schemes,
  })
  .superRefine((credential, ctx) => {
    const kinds = [credential.header, credential.query, credential.aws_sigv4].filter((kind) => kind !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({ code: "custom", message: "expected exactly one of header, query or aws_sigv4" });
    }
  });

export const placeholderSchema = z.strictObject({
  name,
  placeholder: z.string().min(8, "a placeholder must be at least 8 characters, so it cannot occur by accident"),
  secret: name,
  hosts: z.array(hostPattern).min(1),
  in: z.array(z.enum(["header", "query", "path", "body", "websocket"])).min(1).default(["header", "query", "path"]),
  /** The real value is only swapped in on these schemes (the placeholder is still refused elsewhere). */
  schemes: schemes,
});

const regex = z.string().min(1).superRefine((text, ctx) => {
  try {
    new RegExp(text);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: `invalid regular expression: ${(error as Error).message}` });
  }
});

export const llmRuleSchema = z.strictObject({
  name,
  hosts: z.array(hostPattern).min(1),
  paths: z.array(pathGlob).min(1).optional(),
  deny_tools: z
    .array(
      z.strictObject({
        /** glob on the tool name */
        tool: z.string().min(1),
        /** optional: a regex on one field of the tool input, by dotted path ("command", "args.0") */
        when: z.strictObject({ path: z.string().min(1), matches: regex }).optional(),
        message: z.string().min(1).default("this tool call is blocked by policy"),
      }),
    )
    .min(1),
  /** WebSocket sessions (e.g. a realtime API) are relayed raw and cannot be judged: refused unless allowed here. */
  allow_websocket: z.boolean().default(false),
});

/** A glob on a tool name ("get_*"). */
const toolGlob = z.string().min(1);

/** MCP tool calls (SPEC section 9): which tools an agent may call on an MCP server, and see listed. */
export const mcpRuleSchema = z.strictObject({
  name,
  hosts: z.array(hostPattern).min(1),
  paths: z.array(pathGlob).min(1).optional(),
  /** globs on the tool name; absent: every tool not denied */
  allow_tools: z.array(toolGlob).min(1).optional(),
  /** the same entries as an llm rule's: tool glob, optional `when` regex on a dotted argument path, message */
  deny_tools: z.array(llmRuleSchema.shape.deny_tools.element).default([]),
});

export const responseRuleSchema = z
  .strictObject({
    name,
    hosts: z.array(hostPattern).min(1),
    paths: z.array(pathGlob).min(1).optional(),
    set_headers: z
      .record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "expected a header name"), z.string().regex(/^[\t\x20-\x7e]*$/, "a header value must be printable text (no line breaks)"))
      .optional(),
    remove_headers: z.array(z.string().min(1)).optional(),
    /** regex replacements in text bodies; a pattern matches within one line */
    replace: z.array(z.strictObject({ pattern: regex, with: z.string(), flags: z.string().regex(/^[imsu]*$/, "flags may be i, m, s, u").default("") })).optional(),
  })
  .superRefine((rule, ctx) => {
    if (!rule.set_headers && !rule.remove_headers && !rule.replace) {
      ctx.addIssue({ code: "custom", message: "expected at least one of set_headers, remove_headers, replace" });
    }
  });

/** Where sandboxes registered at run time are kept: this process only, a file, or a Redis every replica shares. */
const adminState = z
  .string()
  .min(1)
  .refine((text) => !/^rediss?:/i.test(text) || /^rediss?:\/\/[^\s/]+(\/\d{1,2})?$/.test(text), {
    message: 'a Redis state must look like "redis://HOST:PORT" or "redis://HOST:PORT/DB"',
  });

export const adminSection = z.strictObject({
  /** /healthz, /readyz and /metrics; no admin listener when absent */
  listen: hostPort.optional(),
  /** Bearer token for the /v1/clients API; the API exists only when it is set. */
  token: secretSource.optional(),
  /** Where registered clients live: "memory", a file path, or "redis://HOST:PORT[/DB]". */
  state: adminState.default("memory"),
  /** The longest ttl a registered client may ask for. */
  max_ttl: duration.default(24 * 3_600_000),
});

export const telemetrySection = z.strictObject({
  /** OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (/v1/traces is added); no traces when absent */
  otlp: z.url({ protocol: /^https?$/, error: "expected an http(s) URL like http://127.0.0.1:4318" }).optional(),
  service_name: z.string().min(1).default("portcullis"),
});

/** A size in bytes: a number, or "16MiB", "64KiB", "1MB". */
const byteSize = z
  .union([z.number().int().min(1), z.string().regex(/^\d+(\.\d+)?\s*(B|KB|KiB|MB|MiB|GB|GiB)?$/i, 'expected a size like 65536, "64KiB" or "16MiB"')])
  .transform((value) => (typeof value === "number" ? value : parseByteSize(value)));

function parseByteSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())!;
  const unit = match[2]!.toLowerCase();
  const factor = { "": 1, b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3 }[unit] ?? 1;
  return Math.round(Number(match[1]) * factor);
}

export const webSocketRuleSchema = z.strictObject({
  name,
  hosts: z.array(hostPattern).min(1),
  paths: z.array(pathGlob).min(1).optional(),
  /** Parse the session into messages (and apply every message-level check) even when nothing else asks for it. */
  inspect: z.boolean().default(false),
  /** Larger messages close an inspected session with 1009. */
  max_message_bytes: byteSize.default(16 * 1024 * 1024),
});

/** A budget's window: fixed and UTC-aligned ("1h" on the hour, "1d" from 00:00 UTC). */
const budgetWindow = z
  .string()
  .refine((text) => parseWindow(text) !== undefined, { message: 'expected a window like "30m", "1h", "1d" or "7d"' })
  .transform((text) => parseWindow(text)!);

/** Tokens and/or requests per client per window for a set of LLM hosts (SPEC section 10). */
export const budgetRuleSchema = z
  .strictObject({
    name,
    /** optional: the clients it applies to; each client has its own counter either way */
    clients: z.array(name).min(1).optional(),
    hosts: z.array(hostPattern).min(1),
    paths: z.array(pathGlob).min(1).optional(),
    /** input + output tokens per window */
    tokens: z.number().int().min(1).optional(),
    /** requests per window */
    requests: z.number().int().min(1).optional(),
    window: budgetWindow,
  })
  .superRefine((rule, ctx) => {
    if (rule.tokens === undefined && rule.requests === undefined) ctx.addIssue({ code: "custom", message: "expected at least one of tokens, requests" });
  });

export const budgetsSection = z.strictObject({
  /** memory (this process, shared by --workers) or redis://HOST:PORT[/DB] (shared by every replica) */
  store: z
    .string()
    .regex(/^(memory|rediss?:\/\/[^\s/]+(\/\d{1,2})?)$/, 'expected "memory" or "redis://HOST:PORT[/DB]"')
    .default("memory"),
  /** memory store: where counters are kept across a restart */
  state_file: z.string().min(1).optional(),
  rules: z.array(budgetRuleSchema).default([]),
});

export const policySchema = z.strictObject({
  version: z.literal(1, { message: "expected version: 1" }),
  proxy: proxySection.prefault({}),
  ca: caSection.default({ dir: "certs" }),
  upstream: upstreamSection.prefault({}),
  log: logSection.prefault({}),
  secrets: z.record(name, secretSource).default({}),
  clients: z.array(clientSchema).default([]),
  network: networkSection.prefault({}),
  credentials: z.array(credentialSchema).default([]),
  placeholders: z.array(placeholderSchema).default([]),
  passthrough: passthroughSection.prefault({}),
  admin: adminSection.prefault({}),
  telemetry: telemetrySection.prefault({}),
  llm: z.array(llmRuleSchema).default([]),
  mcp: z.array(mcpRuleSchema).default([]),
  responses: z.array(responseRuleSchema).default([]),
  websocket: z.array(webSocketRuleSchema).default([]),
  budgets: budgetsSection.prefault({}),
});

export type { SecretSource } from "./secret-source-schema.js";
export type ParentProxyPolicy = z.output<typeof parentProxySchema>;
export type Rule = z.output<typeof ruleSchema>;
export type Credential = z.output<typeof credentialSchema>;
export type Placeholder = z.output<typeof placeholderSchema>;
export type LlmRule = z.output<typeof llmRuleSchema>;
export type McpRule = z.output<typeof mcpRuleSchema>;
export type ResponseRule = z.output<typeof responseRuleSchema>;
export type WebSocketRule = z.output<typeof webSocketRuleSchema>;
export type BudgetRule = z.output<typeof budgetRuleSchema>;
export type BudgetsSection = z.output<typeof budgetsSection>;
export type ClientIdentity = z.output<typeof clientSchema>;

/** The policy as written in the file (durations as text). */
export type PolicyInput = z.input<typeof policySchema>;
/** The policy after validation: defaults filled, durations in milliseconds. */
export type Policy = z.output<typeof policySchema>;
