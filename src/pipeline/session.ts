import type { Duplex } from "node:stream";
import type { ProxyMetrics } from "../admin/metrics.js";
import type { WebSocketSummary } from "../core/audit-record.js";
import { getHeader } from "../core/headers.js";
import type { Responder, UpstreamResponse } from "../core/messages.js";
import type { Answer, Flow } from "./stage.js";
import { maxMessageBytes } from "./stages/websocket-rules.js";
import { CloseFrameWatcher } from "./websocket-frames.js";
import { needsInspection, relayMessages } from "./websocket/message-relay.js";

/** After one side closes, the other gets this long to flush what it holds before it is cut. */
const PEER_FLUSH_MS = 5000;

/**
 * The upstream switched protocols: the client gets the upstream's answer (Sec-WebSocket-Accept,
 * the chosen protocol and extensions), then bytes are copied both ways untouched until either
 * side closes. `done` runs once, when the session is over.
 */
export function openSession(flow: Flow, upstream: UpstreamResponse, stream: Duplex, head: Buffer, responder: Responder, metrics: ProxyMetrics, done: () => void): void {
  const { exchange } = flow;
  exchange.upstreamVersion = upstream.httpVersion;
  const answer: Answer = { status: upstream.status, reason: upstream.reason, headers: upstream.headers };
  for (const stage of flow.stages) stage.responseHeaders?.(flow, answer, upstream);
  const webSocket = flow.request.upgrade?.toLowerCase() === "websocket";
  if (webSocket) {
    exchange.ws = {
      protocol: getHeader(upstream.headers, "sec-websocket-protocol") ?? null,
      extensions: getHeader(upstream.headers, "sec-websocket-extensions") ?? null,
      close_code: null,
      closed_by: null,
    };
  }
  const client = responder.upgrade(answer.status, answer.reason ?? "Switching Protocols", answer.headers);
  exchange.status = responder.statusSent ?? answer.status;
  const closed = metrics.webSocketOpened();
  const ended = () => {
    closed();
    done();
  };
  if (webSocket && needsInspection(flow)) relayMessages(flow, client, stream, head, maxMessageBytes(flow), ended);
  else relay(flow, client, stream, head, ended);
}

/** Raw bidirectional copy: no re-framing, half-close respected, no side outlives its peer. */
function relay(flow: Flow, client: Duplex, upstream: Duplex, upstreamHead: Buffer, done: () => void): void {
  const { exchange } = flow;
  const watchers = exchange.ws ? { client: new CloseFrameWatcher(), upstream: new CloseFrameWatcher() } : undefined;
  let closedBy: WebSocketSummary["closed_by"] = null;
  const noteClose = (side: "client" | "upstream") => {
    if (closedBy === null && watchers?.[side].sawClose) closedBy = side;
  };
  const fromClient = (chunk: Buffer) => {
    exchange.reqBytes += chunk.length;
    watchers?.client.push(chunk);
    noteClose("client");
  };
  const fromUpstream = (chunk: Buffer) => {
    exchange.respBytes += chunk.length;
    watchers?.upstream.push(chunk);
    noteClose("upstream");
  };
  if (upstreamHead.length) {
    fromUpstream(upstreamHead);
    client.write(upstreamHead);
  }
  client.on("data", fromClient);
  upstream.on("data", fromUpstream);
  client.pipe(upstream);
  upstream.pipe(client);

  let open = 2;
  const timers: NodeJS.Timeout[] = [];
  const onClose = (side: "client" | "upstream", peer: Duplex) => () => {
    if (closedBy === null) closedBy = side;
    if (!peer.destroyed) {
      // Unpiping paused the peer: it must keep reading to see its own end and close.
      peer.end();
      peer.resume();
      const timer = setTimeout(() => peer.destroy(), PEER_FLUSH_MS);
      timer.unref();
      timers.push(timer);
    }
    if (--open === 0) {
      for (const timer of timers) clearTimeout(timer);
      if (exchange.ws && watchers) {
        exchange.ws.closed_by = closedBy;
        const [first, second] = closedBy === "upstream" ? [watchers.upstream, watchers.client] : [watchers.client, watchers.upstream];
        exchange.ws.close_code = first.closeCode ?? second.closeCode;
      }
      done();
    }
  };
  const onError = (side: "client" | "upstream") => (error: Error) => {
    if (closedBy === null) closedBy = "error";
    exchange.error ??= { type: side === "upstream" ? "upstream_protocol_error" : "client_error", message: `${side} connection failed: ${(error as NodeJS.ErrnoException).code ?? error.message}` };
    client.destroy();
    upstream.destroy();
  };
  client.once("close", onClose("client", upstream));
  upstream.once("close", onClose("upstream", client));
  client.on("error", onError("client"));
  upstream.on("error", onError("upstream"));
}
