import type { Socket } from "node:net";
import type { SecureContext } from "node:tls";
import { ProxyError } from "../../core/errors.js";
import type { OutgoingRequest, Target, Upstream, UpstreamCall, UpstreamEvents } from "../../core/messages.js";
import { formatAuthority, upstreamName } from "../../pipeline/target.js";
import { formatDuration } from "../../policy/duration.js";
import { UpstreamConnector } from "./connector.js";
import { DeferredCall } from "./deferred-call.js";
import { ResentCall } from "./resent-call.js";
import { Http1Agents } from "./http1-agents.js";
import { sendHttp1 } from "./http1.js";
import { openHttp2Connection, sendHttp2, type Http2Connection } from "./http2.js";
import type { LookupFunction } from "./lookup.js";
import type { ParentProxy } from "./parent-proxy.js";
import type { UpstreamSettings } from "./settings.js";

type Protocol = "h2" | "http/1.1";


/** Each event reported once; an error after an error is the same failure seen twice. */
function once(events: UpstreamEvents): UpstreamEvents {
  let failed = false;
  return {
    sent: (version) => events.sent(version),
    continue: () => events.continue(),
    response: (response) => events.response(response),
    upgraded: (response, stream, head) => events.upgraded(response, stream, head),
    error(error: ProxyError) {
      if (failed) return;
      failed = true;
      events.error(error);
    },
  };
}

/**
 * Every upstream connection portcullis makes, shared by all tunnels and clients. TLS
 * upstreams are offered ALPN h2 and http/1.1 and spoken to in what they choose: h2 sessions
 * are pooled per host:port and multiplexed (up to the peer's stream limit; GOAWAY sends new
 * streams to a new session), HTTP/1.1 goes through keep-alive pools. Upgrades (WebSocket)
 * use HTTP/1.1 `Upgrade`.
 */
export class UpstreamPool implements Upstream {
  private readonly agents: Http1Agents;
  /** What each host:port chose when first asked (ALPN); a reload starts a new pool, which asks again. */
  private readonly protocols = new Map<string, Protocol>();
  private readonly sessions = new Map<string, Http2Connection[]>();
  private readonly connecting = new Map<string, Promise<Protocol>>();
  /** How every connection is opened, directly or through the parent proxy; for other modules too (token endpoints). */
  readonly connector: UpstreamConnector;

  constructor(
    lookup: LookupFunction,
    trust: SecureContext,
    private readonly settings: UpstreamSettings,
    parent?: ParentProxy,
  ) {
    this.connector = new UpstreamConnector(lookup, trust, settings, parent);
    this.agents = new Http1Agents(lookup, trust, this.connector);
  }

  send(target: Target, request: OutgoingRequest, rawEvents: UpstreamEvents): UpstreamCall {
    const events = once(rawEvents);
    if (target.scheme !== "https" || request.upgrade !== undefined) {
      // Plain HTTP goes to the parent in absolute form; an upgrade needs the destination itself, so it is tunnelled (RFC 6455 4.1).
      const parent = target.scheme === "http" && request.upgrade === undefined ? this.connector.parentFor(target.host) : undefined;
      return parent ? this.sendViaParent(parent, target, request, events) : this.sendHttp1(target, request, events);
    }
    const key = formatAuthority(target.host, target.port);
    if (this.protocolOf(key) === "http/1.1") return this.sendHttp1(target, request, events);
    const connection = this.sessions.get(key)?.find((candidate) => candidate.available);
    if (connection) return this.sendOnSession(connection, key, target, request, events);
    // The protocol is not known yet, or every h2 session is full: a new connection tells.
    const deferred = new DeferredCall();
    this.acquire(key, target)
      .then((session) => {
        if (deferred.isAborted) return;
        deferred.attach(session ? this.sendOnSession(session, key, target, request, events) : this.sendHttp1(target, request, events));
      })
      .catch((error: unknown) => events.error(error instanceof ProxyError ? error : new ProxyError("internal_error", `cannot send to ${key}: ${(error as Error).message}`)));
    return deferred;
  }

  /**
   * One request on an h2 session. A bodyless one the upstream refused unprocessed
   * (REFUSED_STREAM, or past a GOAWAY's last stream: RFC 9113 8.7) goes once more, on whatever
   * connection has room then, as Go's transport does: the refusal of a draining or full
   * session is not the client's failure. A request with a body is not resent: it has gone.
   */
  private sendOnSession(connection: Http2Connection, key: string, target: Target, request: OutgoingRequest, events: UpstreamEvents): UpstreamCall {
    if (request.hasBody || request.body !== undefined) return sendHttp2(connection, this.settings, target, request, events);
    const call = new ResentCall();
    call.use(
      sendHttp2(connection, this.settings, target, request, events, () => {
        if (call.resent || call.aborted) return false;
        call.resent = true;
        this.acquire(key, target)
          .then((session) => {
            // A client gone while a connection was found: nothing goes out on its behalf.
            if (!call.aborted) call.use(session ? sendHttp2(session, this.settings, target, request, events) : this.sendHttp1(target, request, events));
          })
          .catch((error: unknown) => events.error(error instanceof ProxyError ? error : new ProxyError("internal_error", `cannot send to ${key}: ${(error as Error).message}`)));
        return true;
      }),
    );
    return call;
  }

  /** An h2 session with room for one more stream, connecting as often as it takes; undefined when the host speaks HTTP/1.1. */
  private async acquire(key: string, target: Target): Promise<Http2Connection | undefined> {
    for (let attempt = 0; attempt < 8; attempt++) {
      if (this.protocols.get(key) === "http/1.1") return undefined;
      const ready = this.sessions.get(key)?.find((candidate) => candidate.available);
      if (ready) return ready;
      await this.connect(key, target);
    }
    throw new ProxyError("upstream_unreachable", `no h2 connection to ${key} has room for another stream`);
  }

  dial(host: string, port: number): Promise<Socket> {
    return this.connector.tcp({ host, port });
  }

  destroy(): void {
    this.agents.destroy();
    this.connector.destroy();
    for (const list of this.sessions.values()) for (const connection of list) connection.session.destroy();
    this.sessions.clear();
  }

  private sendHttp1(target: Target, request: OutgoingRequest, events: UpstreamEvents): UpstreamCall {
    return sendHttp1(this.agents.agentFor(target.scheme), this.settings, target, request, events);
  }

  /** The destination judged by the guard first (the parent never is), then the request in absolute form over the pool to the parent. */
  private sendViaParent(parent: ParentProxy, target: Target, request: OutgoingRequest, events: UpstreamEvents): UpstreamCall {
    const deferred = new DeferredCall();
    let timer: NodeJS.Timeout | undefined;
    // The connect timer of the request to the parent starts once it is sent: the check before it is bounded too.
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new ProxyError("upstream_unreachable", `judging ${upstreamName(target)} before sending it to the ${parent.name} timed out after ${formatDuration(this.settings.connectMs)}`)), this.settings.connectMs);
    });
    Promise.race([Promise.all([this.connector.checkDestination(target), parent.authorization()]), timeout])
      .finally(() => clearTimeout(timer))
      .then(([, authorization]) => {
        if (!deferred.isAborted) deferred.attach(sendHttp1(this.agents.toParent!, this.settings, target, request, events, { parent, authorization }));
      })
      .catch((error: unknown) => events.error(error instanceof ProxyError ? error : new ProxyError("internal_error", `cannot send to ${upstreamName(target)}: ${(error as Error).message}`)));
    return deferred;
  }

  private protocolOf(key: string): Protocol | undefined {
    return this.protocols.get(key);
  }

  /** One new TLS connection per host:port at a time; concurrent requests wait for the same one. */
  private connect(key: string, target: Target): Promise<Protocol> {
    const pending = this.connecting.get(key);
    if (pending) return pending;
    const attempt = this.connector.tls(target, ["h2", "http/1.1"])
      .then((socket): Protocol | Promise<Protocol> => {
        const protocol: Protocol = socket.alpnProtocol === "h2" ? "h2" : "http/1.1";
        this.protocols.set(key, protocol);
        if (protocol === "http/1.1") {
          this.agents.https.adopt(target.host, target.port, socket);
          return protocol;
        }
        const connection = openHttp2Connection(target, socket, (gone) => {
          const remaining = (this.sessions.get(key) ?? []).filter((candidate) => candidate !== gone);
          if (remaining.length) this.sessions.set(key, remaining);
          else this.sessions.delete(key);
        });
        this.sessions.set(key, [...(this.sessions.get(key) ?? []), connection]);
        // Its stream limit is known only once the peer's SETTINGS arrived.
        return connection.ready.then(() => protocol);
      })
      .finally(() => this.connecting.delete(key));
    this.connecting.set(key, attempt);
    return attempt;
  }
}
