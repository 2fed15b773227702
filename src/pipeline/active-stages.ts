import type { PolicyState } from "./context.js";
import type { Stage } from "./stage.js";
import { STAGES } from "./stages.js";

const built = new WeakMap<PolicyState, readonly Stage[]>();

/**
 * The stage list as one policy state runs it: the stages that have something to do, in order
 * (once per state, so a reload rebuilds it). A policy without credentials, LLM or MCP rules
 * leaves most stages out of every exchange instead of asking each, in each phase, to do nothing.
 */
export function activeStages(state: PolicyState): readonly Stage[] {
  let stages = built.get(state);
  if (!stages) built.set(state, (stages = STAGES.filter((stage) => stage.active?.(state) ?? true)));
  return stages;
}
