import type { Exchange } from "../proxy/exchange.js";
import type { OutgoingRequest } from "../proxy/rewrite.js";
import type { PolicyState } from "../proxy/runtime.js";

/**
 * Second stage: puts the real credentials a request needs on the outgoing request.
 * Nothing is injected until the policy names credentials.
 */
export async function injectCredentials(_exchange: Exchange, _outgoing: OutgoingRequest, _state: PolicyState): Promise<void> {}
