import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { WebSocketSummary } from "../log/audit-record.js";
import type { Exchange } from "./exchange.js";
import { openUpstreamRequest, upstreamName } from "./forward.js";
import { planResponse, type StreamPlan } from "./modify-response.js";
import { classifyUpstreamError, ProxyError } from "./proxy-error.js";
import { getHeader, type RawHeaders } from "./raw-headers.js";
import { answerErrorOnSocket, recordError } from "./respond.js";
import type { OutgoingRequest } from "./rewrite.js";
import type { PolicyState } from "./runtime.js";
import { CloseFrameWatcher } from "./websocket-frames.js";

/** After one side closes, the other gets this long to flush what it holds before it is cut. */
const PEER_FLUSH_MS = 5000;

function serializeHead(status: number, message: string, headers: RawHeaders): string {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/**
 * Forwards an upgrade handshake and answers the client only with what the upstream said:
 * a 101 becomes a raw byte relay, anything else (401, 403, 404 ...) is relayed as it was.
 * `done` runs once, when the session (or the refused handshake) is over.
 */
export function forwardUpgrade(
  exchange: Exchange,
  req: IncomingMessage,
  client: Duplex,
  head: Buffer,
  outgoing: OutgoingRequest,
  state: PolicyState,
  done: () => void,
  /** Called when a session starts relaying; returns what to call when it ends (metrics). */
  onSessionOpen: () => () => void = () => () => undefined,
): void {
  const isWebSocket = getHeader(req.rawHeaders, "upgrade")?.toLowerCase() === "websocket";
  let settled = false;
  const upstreamReq = openUpstreamRequest(exchange, outgoing, state);
  const abandon = () => {
    if (!settled) {
      settled = true;
      upstreamReq.destroy();
      exchange.error ??= { type: "client_closed", message: "client closed the connection during the handshake" };
      done();
    }
  };
  client.once("close", abandon);

  upstreamReq.on("upgrade", (upstreamRes, upstreamSocket, upstreamHead) => {
    settled = true;
    client.off("close", abandon);
    exchange.status = upstreamRes.statusCode ?? 101;
    const { headers, statusMessage } = planResponse(exchange, upstreamRes, state, { upgrade: true }) as StreamPlan;
    if (isWebSocket) {
      exchange.ws = {
        protocol: getHeader(upstreamRes.rawHeaders, "sec-websocket-protocol") ?? null,
        extensions: getHeader(upstreamRes.rawHeaders, "sec-websocket-extensions") ?? null,
        close_code: null,
        closed_by: null,
      };
    }
    client.write(serializeHead(exchange.status, statusMessage ?? "Switching Protocols", headers));
    const closed = onSessionOpen();
    relay(exchange, client, upstreamSocket, head, upstreamHead, () => {
      closed();
      done();
    });
  });

  upstreamReq.on("response", (upstreamRes) => {
    settled = true;
    client.off("close", abandon);
    relayRefusal(exchange, upstreamRes, client, state, done);
  });

  upstreamReq.on("error", (error) => {
    if (settled) return;
    settled = true;
    client.off("close", abandon);
    const proxyError = classifyUpstreamError(error, upstreamName(exchange));
    recordError(exchange, proxyError);
    exchange.status = answerErrorOnSocket(client, proxyError, exchange.requestId, exchange.scrub);
    done();
  });
  upstreamReq.end();
}

/** A handshake the upstream turned down reaches the client exactly as the upstream sent it. */
function relayRefusal(exchange: Exchange, upstreamRes: IncomingMessage, client: Duplex, state: PolicyState, done: () => void): void {
  exchange.status = upstreamRes.statusCode ?? 502;
  const plan = planResponse(exchange, upstreamRes, state);
  if (plan.kind === "buffer") {
    // A body that must be judged whole (an LLM JSON answer to an upgrade request) is not relayed raw.
    upstreamRes.destroy();
    const error = new ProxyError("upstream_protocol_error", "the upstream answered an upgrade request with a body portcullis must check whole; refused");
    recordError(exchange, error);
    exchange.status = answerErrorOnSocket(client, error, exchange.requestId, exchange.scrub);
    done();
    return;
  }
  const { headers, transforms, statusMessage } = plan;
  // The body is framed by closing the connection: the handshake connection ends here anyway.
  headers.push("Connection", "close");
  client.write(serializeHead(exchange.status, statusMessage ?? "", headers));
  upstreamRes.on("data", (chunk: Buffer) => {
    exchange.respBytes += chunk.length;
  });
  let source: NodeJS.ReadableStream = upstreamRes;
  for (const transform of transforms) source = source.pipe(transform);
  source.pipe(client);
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    client.destroySoon?.();
    done();
  };
  upstreamRes.once("end", finish);
  upstreamRes.once("error", () => {
    client.destroy();
    finish();
  });
  client.once("close", () => {
    upstreamRes.destroy();
    finish();
  });
}

declare module "node:stream" {
  interface Duplex {
    destroySoon?(): void;
  }
}

/** Raw bidirectional copy after a 101: no re-framing, half-close respected, no socket outlives its peer. */
function relay(exchange: Exchange, client: Duplex, upstream: Socket, clientHead: Buffer, upstreamHead: Buffer, done: () => void): void {
  const watchers = exchange.ws ? { client: new CloseFrameWatcher(), upstream: new CloseFrameWatcher() } : undefined;
  let closedBy: WebSocketSummary["closed_by"] = null;
  const noteClose = (side: "client" | "upstream") => {
    if (closedBy === null && watchers?.[side].sawClose) closedBy = side;
  };
  for (const socket of [client, upstream] as const) {
    (socket as Socket).setTimeout?.(0);
    (socket as Socket).setNoDelay?.(true);
    (socket as Socket).setKeepAlive?.(true, 30_000);
  }

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
  if (clientHead.length) {
    fromClient(clientHead);
    upstream.write(clientHead);
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
