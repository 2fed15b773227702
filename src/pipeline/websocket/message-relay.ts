import type { Duplex } from "node:stream";
import type { WebSocketSummary } from "../../core/audit-record.js";
import type { Flow, WsEnd, WsMessage } from "../stage.js";
import { closeCodeOf, createReceiver, createSender, negotiatedExtensions, type WsReceiver, type WsSender } from "./ws-codec.js";

/** After both close frames (or a failure), a side that does not close gets this long. */
const PEER_FLUSH_MS = 5000;

type Side = "client" | "upstream";

type Judged = WsMessage[] | WsEnd;

function isEnd(result: Judged): result is WsEnd {
  return !Array.isArray(result);
}

/** A hook's answer that is to be awaited (any thenable, as `await` treats it). */
function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === "function";
}

/**
 * Messages through the stages' webSocketMessage hooks from stage `first` on: synchronously for as
 * long as every hook answers synchronously (the common case: a promise and an await per hook
 * and message were a tenth of an inspected session's CPU), a promise from the first hook that
 * answers with one.
 */
function judge(flow: Flow, messages: WsMessage[], first = 0): Judged | Promise<Judged> {
  const { stages } = flow;
  for (let index = first; index < stages.length; index++) {
    const stage = stages[index]!;
    if (!stage.webSocketMessage) continue;
    const next: WsMessage[] = [];
    for (let at = 0; at < messages.length; at++) {
      const result = stage.webSocketMessage(flow, messages[at]!);
      if (isPromise(result)) return judgeRest(flow, index, result, next, messages.slice(at + 1));
      if (isEnd(result)) return result;
      next.push(...result);
    }
    messages = next;
  }
  return messages;
}

/** The rest of judge once stage `index` answered with a promise: its other messages, then the stages after it. */
async function judgeRest(flow: Flow, index: number, pending: Promise<Judged>, next: WsMessage[], rest: WsMessage[]): Promise<Judged> {
  const stage = flow.stages[index]!;
  let result = await pending;
  if (isEnd(result)) return result;
  next.push(...result);
  for (const message of rest) {
    result = await stage.webSocketMessage!(flow, message);
    if (isEnd(result)) return result;
    next.push(...result);
  }
  return judge(flow, next, index + 1);
}

/**
 * An inspected session: each side's frames parsed (masking, fragments, permessage-deflate
 * with the parameters the two ends negotiated), every whole message taken through the
 * stages' webSocketMessage hooks in order, and what they let through framed again for the
 * other side. Control frames pass at once (ahead of a message a hook is still judging); close
 * frames wait for the messages before them; close codes are kept.
 */
export function relayMessages(flow: Flow, client: Duplex, upstream: Duplex, upstreamHead: Buffer, maxMessageBytes: number, done: () => void): void {
  const { exchange } = flow;
  const ws = exchange.ws!;
  const counts = (ws.messages = { client: 0, upstream: 0, denied: 0, scrubbed: 0 });
  const extensions = ws.extensions;
  // One permessage-deflate per side, as ws keeps one per connection: the receiver inflates with
  // it, the sender deflates with it, each with that side's half of the negotiated parameters.
  const clientDeflate = negotiatedExtensions(extensions, true, maxMessageBytes);
  const upstreamDeflate = negotiatedExtensions(extensions, false, maxMessageBytes);
  const receivers: Record<Side, WsReceiver> = {
    client: createReceiver(clientDeflate, true, maxMessageBytes),
    upstream: createReceiver(upstreamDeflate, false, maxMessageBytes),
  };
  const senders: Record<Side, WsSender> = { client: createSender(client, clientDeflate), upstream: createSender(upstream, upstreamDeflate) };
  const compress: Record<Side, boolean> = { client: Object.keys(clientDeflate).length > 0, upstream: Object.keys(upstreamDeflate).length > 0 };
  const sockets: Record<Side, Duplex> = { client, upstream };
  const other = (side: Side): Side => (side === "client" ? "upstream" : "client");
  /** Frames portcullis writes towards the upstream are masked, as a client's must be (RFC 6455 5.3). */
  const masked = (to: Side) => to === "upstream";
  const closeSent: Record<Side, boolean> = { client: false, upstream: false };
  const closeReceived: Record<Side, boolean> = { client: false, upstream: false };
  let closedBy: WebSocketSummary["closed_by"] = null;
  let ending = false;
  // Messages of one direction are judged one after the other, so their order is kept.
  const queues: Record<Side, Promise<void>> = { client: Promise.resolve(), upstream: Promise.resolve() };

  const sendClose = (to: Side, code: number | undefined, reason: Buffer | undefined) => {
    if (closeSent[to] || sockets[to].destroyed) return;
    closeSent[to] = true;
    try {
      senders[to].close(code === 1005 ? undefined : code, reason, masked(to));
    } catch {
      senders[to].close(1011, undefined, masked(to));
    }
  };
  const finish = () => {
    if (ending) return;
    ending = true;
    client.resume();
    upstream.resume();
    for (const socket of [client, upstream]) {
      socket.end();
      setTimeout(() => socket.destroy(), PEER_FLUSH_MS).unref();
    }
  };
  /** A stage or a protocol error ends the session: both sides get the same close. */
  const endBoth = (end: WsEnd, by: WebSocketSummary["closed_by"]) => {
    closedBy ??= by;
    ws.close_code ??= end.close;
    const reason = Buffer.from(end.reason.slice(0, 120));
    sendClose("client", end.close, reason);
    sendClose("upstream", end.close, reason);
    finish();
  };

  const send = (result: Judged) => {
    if (isEnd(result)) return endBoth(result, "error");
    for (const message of result) {
      const to = other(message.from);
      if (!closeSent[to]) senders[to].send(message.data, { binary: message.binary, compress: compress[to], fin: true, mask: masked(to) });
    }
  };
  const failed = () => endBoth({ close: 1011, reason: "internal error" }, "error");
  /** Messages of each direction that a hook is judging asynchronously: later ones wait for them. */
  const judging: Record<Side, number> = { client: 0, upstream: 0 };
  const deliver = (from: Side, data: Buffer, binary: boolean) => {
    counts[from]++;
    const message: WsMessage = { from, binary, data };
    let judged: Promise<void>;
    if (judging[from] === 0) {
      if (ending) return;
      let result: Judged | Promise<Judged>;
      // A hook or the framing that throws ends this session, as a rejected promise does; it must
      // not escape into the socket's 'data' handler, where it would take the process down.
      try {
        result = judge(flow, [message]);
        if (!isPromise(result)) {
          send(result);
          return;
        }
      } catch {
        failed();
        return;
      }
      judged = result.then(send);
    } else {
      judged = queues[from].then(async () => {
        if (ending) return;
        send(await judge(flow, [message]));
      });
    }
    judging[from]++;
    queues[from] = judged.finally(() => judging[from]--);
    queues[from].catch(failed);
  };

  /** A control frame's payload through the stages' webSocketControl hooks, kept within the frame's limit. */
  const control = (from: Side, payload: Buffer, limit: number): Buffer => {
    let out = payload;
    for (const stage of flow.stages) if (stage.webSocketControl) out = stage.webSocketControl(flow, from, out);
    return out.length <= limit ? out : utf8Prefix(out, limit);
  };

  for (const side of ["client", "upstream"] as const) {
    const receiver = receivers[side];
    const to = other(side);
    receiver.on("message", (data, isBinary) => deliver(side, data, isBinary));
    receiver.on("ping", (data) => void (closeSent[to] || senders[to].ping(control(side, data, 125), masked(to))));
    receiver.on("pong", (data) => void (closeSent[to] || senders[to].pong(control(side, data, 125), masked(to))));
    receiver.on("conclude", (code, raw) => {
      const reason = control(side, raw, 123);
      closeReceived[side] = true;
      closedBy ??= side;
      ws.close_code ??= code;
      // The close goes on after the messages still being judged in that direction.
      // A failed queue has ended both sides already (`failed`): nothing to close, nothing to report.
      queues[side].then(
        () => {
          sendClose(to, code, reason);
          if (closeReceived[to] || closeSent[side]) finish();
        },
        () => {},
      );
    });
    receiver.on("error", (error) => {
      exchange.error ??= { type: "websocket_protocol_error", message: `${side} sent a frame portcullis cannot relay: ${error.message}` };
      endBoth({ close: closeCodeOf(error), reason: "" }, "error");
    });
    const socket = sockets[side];
    socket.on("data", (chunk: Buffer) => {
      if (side === "client") exchange.reqBytes += chunk.length;
      else exchange.respBytes += chunk.length;
      // Once the session is ending, what still comes is only read to the connection's end.
      if (!ending && !receiver.write(chunk)) socket.pause();
    });
    receiver.on("drain", () => socket.resume());
  }
  if (upstreamHead.length) {
    exchange.respBytes += upstreamHead.length;
    receivers.upstream.write(upstreamHead);
  }

  let open = 2;
  const onClose = (side: Side) => () => {
    closedBy ??= side;
    if (!sockets[other(side)].destroyed) {
      sockets[other(side)].end();
      setTimeout(() => sockets[other(side)].destroy(), PEER_FLUSH_MS).unref();
    }
    if (--open === 0) {
      ws.closed_by = closedBy;
      for (const deflate of [clientDeflate, upstreamDeflate]) for (const extension of Object.values(deflate)) extension.cleanup();
      done();
    }
  };
  client.once("close", onClose("client"));
  upstream.once("close", onClose("upstream"));
  const onError = (side: Side) => (error: Error) => {
    closedBy ??= "error";
    exchange.error ??= { type: side === "upstream" ? "upstream_protocol_error" : "client_error", message: `${side} connection failed: ${(error as NodeJS.ErrnoException).code ?? error.message}` };
    client.destroy();
    upstream.destroy();
  };
  client.on("error", onError("client"));
  upstream.on("error", onError("upstream"));
}

/** Whether any stage must read this session's messages (SPEC section 8); otherwise it stays a byte copy. */
export function needsInspection(flow: Flow): boolean {
  return flow.stages.some((stage) => stage.webSocketSession?.(flow) === true);
}

/** The first `limit` bytes of a UTF-8 text or less, never ending inside a character. */
function utf8Prefix(text: Buffer, limit: number): Buffer {
  let end = limit;
  while (end > 0 && (text[end]! & 0xc0) === 0x80) end--;
  return text.subarray(0, end);
}
