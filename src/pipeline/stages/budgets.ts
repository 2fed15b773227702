import { contentCoding, decoderFor } from "../content-decoding.js";
import { BudgetStoreUnavailable, type CounterCheck } from "../../budgets/store.js";
import type { BudgetLedger } from "../../budgets/ledger.js";
import type { BudgetRule } from "../../policy/schema.js";
import type { LlmSummary } from "../../core/audit-record.js";
import { ProxyError } from "../../core/errors.js";
import type { Exchange } from "../../core/exchange.js";
import { getHeader, restrictAcceptEncoding } from "../../core/headers.js";
import { headerReason } from "../../core/reason-header.js";
import { apiErrorBody } from "../../llm/api-errors.js";
import { scanJson } from "../../mcp/json-scan.js";
import { llmRulesFor } from "../../llm/evaluate.js";
import { webSocketApiForPath } from "../../llm/message-guard.js";
import { apiForPath } from "../../llm/tool-calls.js";
import { chargedTokens, JsonUsageReader, SseUsageReader, WebSocketUsageReader, type UsageApi } from "../../llm/usage.js";
import type { BodyObserver, BodyTap, Flow, Stage, WholeAnswer, WsMessage } from "../stage.js";

/** What the budgets stage keeps about an LLM exchange between its hooks. */
export interface UsageNotes {
  /** The API the path names (undefined: told from the answer's shape). */
  api: UsageApi | undefined;
  /** The counters this request was admitted under; its tokens are charged to them when it ends. */
  charged?: { ledger: BudgetLedger; rules: BudgetRule[]; checks: CounterCheck[] };
  webSocket?: WebSocketUsageReader;
}

/** The longest an audit line waits for a compressed body's usage to be read after the response ended. */
const USAGE_SETTLE_MS = 2000;

/** The usage an answer reported: on the audit line, and charged to the request's budgets. */
function settle(flow: Flow, usage: LlmSummary | undefined): void {
  const notes = flow.notes.usage;
  if (!usage || !notes) return;
  flow.exchange.llm = usage;
  charge(notes, usage);
}

function charge(notes: UsageNotes, usage: LlmSummary): void {
  const tokens = chargedTokens(usage);
  // A store that cannot be reached reports its own outage; the answer has been delivered either way.
  if (notes.charged && tokens > 0) notes.charged.ledger.charge(notes.charged.checks, tokens).catch(() => undefined);
}

/**
 * Reads usage off the upstream's bytes as they pass: decoded on the side when they are
 * compressed (the client gets the original bytes), parsed as an event stream or JSON.
 */
function usageObserver(flow: Flow, reader: SseUsageReader | JsonUsageReader, encoding: string | undefined): BodyObserver | undefined {
  const decoder = decoderFor(encoding);
  if (decoder === "unsupported") return undefined;
  let settled = false;
  const finish = () => {
    if (settled) return;
    settled = true;
    reader.end();
    settle(flow, reader.tally.usage);
  };
  if (!decoder) {
    return { write: (chunk) => reader.push(chunk), end: finish };
  }
  flow.exchange.auditAfter = new Promise<void>((resolve) => {
    const done = () => (finish(), resolve());
    decoder.on("data", (chunk: Buffer) => reader.push(chunk));
    decoder.once("end", done);
    decoder.once("error", done);
    decoder.once("close", done);
    setTimeout(done, USAGE_SETTLE_MS).unref();
  });
  return {
    write: (chunk) => void decoder.write(chunk),
    end: (complete) => (complete ? decoder.end() : decoder.destroy()),
  };
}

/** A spent budget: 429 in the API's own error shape, Retry-After to the window's end, one `denied` line. */
function exceededAnswer(exchange: Exchange, api: UsageApi | undefined, spent: CounterCheck, now: number): WholeAnswer {
  const what = spent.limitTokens !== undefined && spent.limitRequests !== undefined ? "tokens or requests" : spent.limitTokens !== undefined ? "tokens" : "requests";
  const reason = `budget ${spent.rule} is spent for this window (${what}); it resets at ${new Date(spent.windowEnd).toISOString()}`;
  exchange.decision = "deny";
  exchange.rule = spent.rule;
  exchange.reason = reason;
  exchange.error = { type: "budget_exceeded", message: reason };
  const httpApi = api === "openai-realtime" ? "openai-responses" : api;
  const body = Buffer.from(
    httpApi
      ? apiErrorBody(httpApi, reason, spent.rule, "budget_exceeded")
      : JSON.stringify({ error: { type: "budget_exceeded", message: reason, rule: spent.rule, request_id: exchange.requestId } }),
  );
  return {
    status: 429,
    reason: undefined,
    headers: [
      "Content-Type", "application/json",
      "Retry-After", String(Math.max(1, Math.ceil((spent.windowEnd - now) / 1000))),
      "X-Portcullis-Error", "budget_exceeded",
      "X-Portcullis-Reason", headerReason(exchange.scrub(reason)),
      "Cache-Control", "no-store",
    ],
    body,
  };
}

/** An error event for the client of a WebSocket LLM session, in the shape SPEC section 8 uses for policy_denied. */
function errorEvent(type: "budget_exceeded" | "budget_unavailable", message: string, rule: string): WsMessage {
  return { from: "upstream", binary: false, data: Buffer.from(JSON.stringify({ type: "error", error: { type, message, rule } })) };
}

/**
 * A session was admitted at its handshake; each `response.create` in it asks for a new response,
 * so it is checked against the counters of the window it comes in (counting nothing: the
 * session was counted as one request). Spent: the message never reaches the upstream, the
 * client gets an error event, and the session stays open.
 */
function checkNewResponse(flow: Flow, charged: NonNullable<UsageNotes["charged"]>, message: WsMessage): WsMessage[] | Promise<WsMessage[]> {
  // Parsed, never searched as text: "response\u002ecreate" is the same type to the server, and so
  // is one sent in a binary frame. A message that repeats any key is checked too: servers differ
  // on which of two "type"s wins (and the scan names only the first key repeated).
  const text = message.data.toString("utf8");
  let type: unknown;
  try {
    type = (JSON.parse(text) as { type?: unknown } | null)?.type;
  } catch {
    return [message];
  }
  if (type !== "response.create" && scanJson(text).duplicateKey === undefined) return [message];
  const { exchange } = flow;
  const checks = charged.ledger.checksFor(charged.rules, exchange.tunnel.client);
  const refuse = (type: "budget_exceeded" | "budget_unavailable", reason: string, rule: string) => {
    exchange.decision = "deny";
    exchange.rule = rule;
    exchange.reason = reason;
    if (exchange.ws?.messages) exchange.ws.messages.denied++;
    return [errorEvent(type, reason, rule)];
  };
  return charged.ledger.peek(checks).then(
    (spent) => {
      if (spent) return refuse("budget_exceeded", `budget ${spent.rule} is spent for this window; it resets at ${new Date(spent.windowEnd).toISOString()}`, spent.rule);
      // Later responses are charged to the window they are asked for in.
      charged.checks = checks;
      return [message];
    },
    (error: unknown) => {
      if (!(error instanceof BudgetStoreUnavailable)) throw error;
      return refuse("budget_unavailable", "the budget store cannot be reached", charged.rules[0]!.name);
    },
  );
}

/**
 * LLM usage and budgets (SPEC section 10). For a host under an llm or budgets rule, the usage
 * the API reports is read as the answer passes — never held back — and written on the audit
 * line; under a budget, a request whose counter is spent is answered 429 and never forwarded,
 * one that is admitted counts as a request at once (atomically with the check) and its tokens
 * are charged when the answer ends. A store that cannot be reached refuses budgeted requests
 * with 503 (fail closed).
 */
export const budgets: Stage = {
  name: "budgets",
  // Usage is read under a budget, and for the audit line of any host an llm rule covers.
  active: (state) => state.budgets !== undefined || state.policy.llm.length > 0,
  request(flow: Flow) {
    const { state, exchange } = flow;
    const ledger = state.budgets;
    const client = exchange.tunnel.client;
    const rules = ledger ? ledger.rulesFor(exchange.target.host, exchange.readings, client) : [];
    const llm = flow.notes.llmRules ?? (state.policy.llm.length ? llmRulesFor(state.policy, exchange.target.host, exchange.readings) : []);
    if (rules.length === 0 && llm.length === 0) return;
    const api: UsageApi | undefined = flow.upgrade ? webSocketApiForPath(exchange.readings) : apiForPath(exchange.readings);
    const notes: UsageNotes = { api };
    flow.notes.usage = notes;
    if (!ledger || rules.length === 0) return;
    const checks = ledger.checksFor(rules, client);
    return ledger.admit(checks).then(
      (admission) => {
        if (admission.ok) notes.charged = { ledger, rules, checks };
        else flow.answer = exceededAnswer(exchange, api, admission.spent, Date.now());
      },
      (error: unknown) => {
        if (!(error instanceof BudgetStoreUnavailable)) throw error;
        throw new ProxyError("budget_unavailable", `the budget store cannot be reached, so requests under budget ${rules[0]!.name} are refused`, rules[0]!.name);
      },
    );
  },
  beforeForward(flow: Flow) {
    // Usage that cannot be decoded cannot be charged: the upstream is only offered codings portcullis reads.
    if (flow.notes.usage?.charged) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseBody(flow: Flow, answer, upstream): BodyTap | undefined {
    const notes = flow.notes.usage;
    if (!notes || flow.upgrade || answer.status < 200 || answer.status >= 300) return undefined;
    const contentType = getHeader(upstream.headers, "content-type")?.toLowerCase() ?? "";
    const httpApi = notes.api === "openai-realtime" ? undefined : notes.api;
    let reader: SseUsageReader | JsonUsageReader;
    if (contentType.startsWith("text/event-stream")) reader = new SseUsageReader(httpApi);
    else if (/^application\/([\w.+-]*\+)?json/.test(contentType)) reader = new JsonUsageReader(httpApi);
    else return undefined;
    const observe = usageObserver(flow, reader, contentCoding(upstream.headers));
    return observe && { observe, undecodable: () => "pass" };
  },
  webSocketSession: (flow: Flow) => flow.upgrade && (flow.notes.usage?.api === "openai-realtime" || flow.notes.usage?.api === "openai-responses"),
  webSocketMessage(flow: Flow, message: WsMessage): WsMessage[] | Promise<WsMessage[]> {
    const notes = flow.notes.usage;
    if (!notes?.api) return [message];
    if (message.from === "client") return notes.charged ? checkNewResponse(flow, notes.charged, message) : [message];
    if (message.binary) return [message];
    notes.webSocket ??= new WebSocketUsageReader(notes.api);
    const done = notes.webSocket.push(message.data.toString("utf8"));
    if (done) {
      flow.exchange.llm = notes.webSocket.usage;
      charge(notes, done);
    }
    return [message];
  },
};
