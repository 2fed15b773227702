import { awsSigv4 } from "./stages/aws-sigv4.js";
import { budgets } from "./stages/budgets.js";
import { credentials } from "./stages/credentials.js";
import { echoScrub } from "./stages/echo-scrub.js";
import { headerHygiene } from "./stages/header-hygiene.js";
import { llmPolicy } from "./stages/llm.js";
import { mcpPolicy } from "./stages/mcp.js";
import { placeholders } from "./stages/placeholders.js";
import { policyDecision } from "./stages/policy-decision.js";
import { responseRules } from "./stages/response-rules.js";
import { userHooks } from "./stages/user-hooks.js";
import { webSocketRules } from "./stages/websocket-rules.js";
import type { Stage } from "./stage.js";

/**
 * The pipeline, in order. The runner (runner.ts) takes every exchange, whichever protocol
 * carried it, through these phases, each for every stage in this order:
 *
 *   requestHeaders → (body read, if a stage asked) → request → beforeForward
 *   → forward (the upstream) → responseHeaders → responseBody → response → responseTrailers
 *   → one audit line
 *
 * A request hook may answer the request itself (flow.answer, e.g. mcp's JSON-RPC error for a
 * refused tool call): the rest of the request phase and the forward are skipped, and the answer
 * goes through the response phase to the client.
 *
 * A WebSocket session some stage must read (webSocketSession) is parsed into messages, each
 * taken through webSocketMessage in this order; any other session stays a byte copy.
 *
 * So a request is judged (placeholders headed elsewhere, policy, llm, mcp, hooks) before any secret
 * is resolved, and secrets go on (credentials, placeholders) only once it is allowed. A new
 * capability is a new stage in this list. aws-sigv4 comes last: it signs the request exactly as
 * every other stage left it.
 */
export const STAGES: readonly Stage[] = [
  headerHygiene,
  credentials,
  placeholders,
  policyDecision,
  llmPolicy,
  mcpPolicy,
  budgets,
  responseRules,
  echoScrub,
  webSocketRules,
  userHooks,
  awsSigv4,
];
