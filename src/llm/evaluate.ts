import picomatch from "picomatch";
import { anyHostMatches } from "../policy/hosts.js";
import { pathsInScope } from "../policy/paths.js";
import type { LlmRule, Policy } from "../policy/schema.js";
import type { ToolCall } from "./tool-calls.js";

/** What evaluateToolCall needs of a rule: its name and its deny_tools (llm and mcp rules both have them). */
export type ToolRule = Pick<LlmRule, "name" | "deny_tools">;

export interface ToolVerdict {
  rule: string;
  tool: string;
  message: string;
}

export function llmRulesFor(policy: Policy, host: string, pathReadings: readonly string[]): LlmRule[] {
  return policy.llm.filter((rule) => anyHostMatches(rule.hosts, host) && pathsInScope(rule.paths, pathReadings));
}

/** The value at a dotted path ("command", "args.0") of a tool's input, as text; undefined if absent. */
export function fieldText(input: unknown, path: string): string | undefined {
  let value: unknown = input;
  for (const key of path.split(".")) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : JSON.stringify(value);
}

const toolMatchers = new Map<string, (name: string) => boolean>();
const patterns = new Map<string, RegExp>();

/**
 * A tool-name glob. `*` crosses `/` (picomatch's bash mode): tool names are not paths, and
 * gateways namespace them ("github/delete_repo"), which `*delete*` must still match.
 */
export function toolGlob(glob: string): (name: string) => boolean {
  return picomatch(glob, { dot: true, bash: true });
}

/**
 * A tool name no glob can be trusted to judge: control characters, line separators or white
 * space at either end, which a server may trim or split ("delete_repo\n" is delete_repo to it).
 */
export function unjudgeableToolName(name: string): boolean {
  return /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name) || name.trim() !== name;
}

/** The first deny_tools entry (rules in order) that this call matches, if any. */
export function evaluateToolCall(rules: readonly ToolRule[], call: ToolCall): ToolVerdict | undefined {
  const guarded = rules.find((rule) => rule.deny_tools.length > 0);
  if (guarded && unjudgeableToolName(call.name)) return { rule: guarded.name, tool: call.name, message: "a tool name with control characters or surrounding white space cannot be judged" };
  for (const rule of rules) {
    for (const deny of rule.deny_tools) {
      let matcher = toolMatchers.get(deny.tool);
      if (!matcher) toolMatchers.set(deny.tool, (matcher = toolGlob(deny.tool)));
      if (!matcher(call.name)) continue;
      if (deny.when) {
        let text: string | undefined;
        try {
          text = fieldText(call.input, deny.when.path);
        } catch {
          // An input nested past what JSON.stringify can write cannot be shown harmless: denied.
          return { rule: rule.name, tool: call.name, message: `${deny.message} (its input could not be read)` };
        }
        let pattern = patterns.get(deny.when.matches);
        if (!pattern) patterns.set(deny.when.matches, (pattern = new RegExp(deny.when.matches)));
        if (text === undefined || !pattern.test(text)) continue;
      }
      return { rule: rule.name, tool: call.name, message: deny.message };
    }
  }
  return undefined;
}

export function describeVerdict(verdict: ToolVerdict): string {
  return `tool call "${verdict.tool}" denied by llm rule ${verdict.rule}: ${verdict.message}`;
}
