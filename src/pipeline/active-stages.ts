import type { PolicyState } from "./context.js";
import type { Hooks } from "./hooks.js";
import type { Stage } from "./stage.js";
import { STAGES } from "./stages.js";

const built = new WeakMap<PolicyState, { hooks: readonly Hooks[]; stages: readonly Stage[] }>();

/**
 * The stage list as one policy state runs it: the stages that have something to do, in order
 * (once per state, so a reload rebuilds it). A policy without credentials, LLM or MCP rules
 * leaves most stages out of every exchange instead of asking each, in each phase, to do nothing.
 */
export function activeStages(state: PolicyState, hooks: readonly Hooks[]): readonly Stage[] {
  const cached = built.get(state);
  if (cached?.hooks === hooks) return cached.stages;
  const stages = STAGES.filter((stage) => stage.active?.(state, hooks) ?? true);
  built.set(state, { hooks, stages });
  return stages;
}
