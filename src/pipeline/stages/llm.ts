import { ProxyError } from "../../core/errors.js";
import type { Exchange } from "../../core/exchange.js";
import { getHeader, restrictAcceptEncoding } from "../../core/headers.js";
import { apiErrorBody } from "../../llm/api-errors.js";
import { describeVerdict, evaluateToolCall, llmRulesFor } from "../../llm/evaluate.js";
import { LlmSseGuard, MAX_LLM_BODY_BYTES, type Denial } from "../../llm/sse-guard.js";
import { apiForBody, apiForPath, toolCallsInBody, UnparseableLlmResponse, type LlmApi } from "../../llm/tool-calls.js";
import type { LlmRule } from "../../policy/schema.js";
import { LlmMessageGuard, webSocketApiForPath } from "../../llm/message-guard.js";
import { headerReason } from "../../core/reason-header.js";
import type { BodyTap, Flow, Stage, WholeAnswer, WsEnd, WsMessage } from "../stage.js";

/** Records an LLM denial on the exchange: one `denied` audit line naming the tool and rule. */
function recordLlmDenial(exchange: Exchange, reason: string, rule: string | null): void {
  exchange.decision = "deny";
  exchange.rule = rule;
  exchange.reason = reason;
  exchange.error = { type: "policy_denied", message: reason };
}

function denialAnswer(exchange: Exchange, api: LlmApi | undefined, reason: string, rule: string | null): WholeAnswer {
  recordLlmDenial(exchange, reason, rule);
  const body = Buffer.from(apiErrorBody(api, reason, rule));
  return {
    status: 400,
    reason: undefined,
    headers: ["Content-Type", "application/json", "Content-Length", String(body.length), "X-Portcullis-Error", "policy_denied", "X-Portcullis-Reason", headerReason(exchange.scrub(reason)), "X-Request-Id", exchange.requestId],
    body,
  };
}

/** Judges a complete JSON response of an LLM API; any doubt denies. */
function judgeJson(rules: readonly LlmRule[], pathApi: LlmApi | undefined, body: Buffer | undefined): { api: LlmApi | undefined; denial?: { reason: string; rule: string | null } } {
  if (body === undefined) return { api: pathApi, denial: { reason: "LLM response over 10 MiB could not be checked", rule: null } };
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return { api: pathApi, denial: { reason: "LLM response could not be checked: body is not valid JSON", rule: null } };
  }
  const api = pathApi ?? apiForBody(parsed);
  try {
    for (const call of toolCallsInBody(parsed)) {
      const verdict = evaluateToolCall(rules, call);
      if (verdict) return { api, denial: { reason: describeVerdict(verdict), rule: verdict.rule } };
    }
  } catch (error) {
    if (error instanceof UnparseableLlmResponse) return { api, denial: { reason: `LLM response could not be checked: ${error.message}`, rule: null } };
    throw error;
  }
  return { api };
}

/** A WebSocket to a host under an llm rule would carry tool calls no one judges: fail closed unless the rule allows it. */
function refuseUninspectableUpgrade(rules: readonly LlmRule[], exchange: Exchange): void {
  const rule = rules.find((candidate) => !candidate.allow_websocket);
  if (!rule) return;
  throw new ProxyError(
    "policy_denied",
    `WebSocket sessions to ${exchange.target.host} are not inspected for tool calls, so llm rule ${rule.name} refuses them (set allow_websocket: true on the rule to allow)`,
    rule.name,
  );
}

/**
 * LLM tool-call policy: a dangerous tool call is stopped before the agent sees it. JSON
 * answers are read whole and judged; streams are watched event by event, text flowing on,
 * a tool call held until complete. Anything that cannot be read fails closed.
 */
export const llmPolicy: Stage = {
  name: "llm",
  active: (state) => state.policy.llm.length > 0,
  request(flow: Flow) {
    const { state, exchange } = flow;
    if (state.policy.llm.length === 0) return;
    flow.notes.llmRules = llmRulesFor(state.policy, exchange.target.host, exchange.readings);
    // A WebSocket API portcullis understands is inspected; any other is refused unless the rule allows it raw.
    if (flow.upgrade && !webSocketApiForPath(exchange.readings)) refuseUninspectableUpgrade(flow.notes.llmRules, exchange);
  },
  webSocketSession: (flow: Flow) => (flow.notes.llmRules?.length ?? 0) > 0 && webSocketApiForPath(flow.exchange.readings) !== undefined,
  webSocketMessage(flow: Flow, message: WsMessage): WsMessage[] | WsEnd {
    const rules = flow.notes.llmRules;
    if (!rules?.length || message.from !== "upstream") return [message];
    const { exchange } = flow;
    if (message.binary) {
      recordLlmDenial(exchange, "LLM session could not be checked: binary server message", null);
      return { close: 1008, reason: "policy_denied: message could not be checked" };
    }
    flow.notes.llmGuard ??= new LlmMessageGuard((call) => {
      const verdict = evaluateToolCall(rules, call);
      return verdict && { message: describeVerdict(verdict), rule: verdict.rule };
    });
    let result;
    try {
      result = flow.notes.llmGuard.push(message.data.toString("utf8"));
    } catch (error) {
      if (!(error instanceof UnparseableLlmResponse)) throw error;
      recordLlmDenial(exchange, `LLM session could not be checked: ${error.message}`, null);
      return { close: 1008, reason: "policy_denied: message could not be checked" };
    }
    for (const denial of result.denials) {
      recordLlmDenial(exchange, denial.message, denial.rule);
      if (exchange.ws?.messages) exchange.ws.messages.denied++;
    }
    return result.send.map((text) => ({ from: "upstream" as const, binary: false, data: Buffer.from(text, "utf8") }));
  },
  beforeForward(flow: Flow) {
    // An upstream must not answer in a coding portcullis cannot read and judge.
    if (flow.notes.llmRules?.length) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseBody(flow: Flow, answer, upstream): BodyTap | undefined {
    const rules = flow.notes.llmRules;
    if (!rules?.length || answer.status < 200 || answer.status >= 300) return undefined;
    const contentType = getHeader(upstream.headers, "content-type")?.toLowerCase() ?? "";
    const isSse = contentType.startsWith("text/event-stream");
    const isJson = /^application\/([\w.+-]*\+)?json/.test(contentType);
    if (!isSse && !isJson) return undefined;
    const { exchange } = flow;
    const pathApi = apiForPath(exchange.readings);
    const undecodable = () => denialAnswer(exchange, pathApi, "LLM response could not be checked: unsupported Content-Encoding", null);
    if (isJson) {
      return {
        undecodable,
        hold: {
          limit: MAX_LLM_BODY_BYTES,
          judge(body) {
            const { api, denial } = judgeJson(rules, pathApi, body);
            return denial ? denialAnswer(exchange, api, denial.reason, denial.rule) : undefined;
          },
        },
      };
    }
    let abandon: () => void = () => undefined;
    const guard = new LlmSseGuard(
      pathApi,
      (call) => {
        const verdict = evaluateToolCall(rules, call);
        return verdict && { message: describeVerdict(verdict), rule: verdict.rule };
      },
      (denial: Denial) => {
        recordLlmDenial(exchange, denial.message, denial.kind === "tool" ? denial.rule : null);
        abandon();
      },
    );
    return { transform: guard, undecodable, onCut: (fn) => (abandon = fn) };
  },
};
