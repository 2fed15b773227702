import type { DestinationGuard } from "../../policy/destinations.js";

/** What every upstream connection obeys, from the policy's `upstream` section and the guard. */
export interface UpstreamSettings {
  connectMs: number;
  responseMs: number;
  guard: DestinationGuard;
}
