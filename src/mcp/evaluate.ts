import { evaluateToolCall, toolGlob } from "../llm/evaluate.js";
import type { ToolCall } from "../llm/tool-calls.js";
import { anyHostMatches } from "../policy/hosts.js";
import { pathsInScope } from "../policy/paths.js";
import type { McpRule, Policy } from "../policy/schema.js";

export interface McpVerdict {
  rule: string;
  tool: string;
  /** The rule's words: the deny_tools message, or why allow_tools does not cover the tool. */
  message: string;
}

/**
 * The mcp rules for a request: host, and (when a rule has paths) any reading of the path, so a
 * request cannot leave the rules' view by spelling its path the way only its server reads it.
 */
export function mcpRulesFor(policy: Policy, host: string, pathReadings: readonly string[]): McpRule[] {
  return policy.mcp.filter((rule) => anyHostMatches(rule.hosts, host) && pathsInScope(rule.paths, pathReadings));
}

const globs = new Map<string, (name: string) => boolean>();

function globMatches(glob: string, name: string): boolean {
  let matcher = globs.get(glob);
  if (!matcher) globs.set(glob, (matcher = toolGlob(glob)));
  return matcher(name);
}

const allowed = (rule: McpRule, name: string) => !rule.allow_tools || rule.allow_tools.some((glob) => globMatches(glob, name));

/** The first rule (in order) that refuses this call: not in its allow_tools, or matching one of its deny_tools. */
export function judgeToolCall(rules: readonly McpRule[], call: ToolCall): McpVerdict | undefined {
  for (const rule of rules) {
    if (!allowed(rule, call.name)) return { rule: rule.name, tool: call.name, message: `tool "${call.name}" is not in allow_tools` };
    const verdict = evaluateToolCall([rule], call);
    if (verdict) return verdict;
  }
  return undefined;
}

/**
 * Whether a tools/list may show the tool: every rule allows it, and no deny_tools entry without
 * a `when` matches it. A tool denied only for some arguments stays listed (it can be called).
 */
export function toolVisible(rules: readonly McpRule[], name: string): boolean {
  return rules.every((rule) => allowed(rule, name) && !rule.deny_tools.some((deny) => deny.when === undefined && globMatches(deny.tool, name)));
}

export function describeMcpVerdict(verdict: McpVerdict): string {
  return `tool call "${verdict.tool}" denied by mcp rule ${verdict.rule}: ${verdict.message}`;
}
