import { connect, type Socket } from "node:net";
import type { SecureContext } from "node:tls";
import type { OutgoingRequest, Target, Upstream, UpstreamCall, UpstreamEvents } from "../../core/messages.js";
import { Http1Agents } from "./http1-agents.js";
import { sendHttp1 } from "./http1.js";
import type { LookupFunction } from "./lookup.js";
import type { UpstreamSettings } from "./settings.js";

/** Every upstream connection portcullis makes, shared by all tunnels and clients. */
export class UpstreamPool implements Upstream {
  private readonly agents: Http1Agents;

  constructor(
    private readonly lookup: LookupFunction,
    trust: SecureContext,
    private readonly settings: UpstreamSettings,
  ) {
    this.agents = new Http1Agents(lookup, trust);
  }

  send(target: Target, request: OutgoingRequest, events: UpstreamEvents): UpstreamCall {
    return sendHttp1(this.agents.agentFor(target.scheme), this.settings, target, request, events);
  }

  dial(host: string, port: number): Socket {
    return connect({ host, port, lookup: this.lookup, noDelay: true });
  }

  destroy(): void {
    this.agents.destroy();
  }
}
