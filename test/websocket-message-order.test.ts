import { Duplex } from "node:stream";
import { describe, expect, it } from "vitest";
import type { Flow, Stage, WsEnd, WsMessage } from "../src/pipeline/stage.js";
import { relayMessages } from "../src/pipeline/websocket/message-relay.js";
import { createReceiver, createSender } from "../src/pipeline/websocket/ws-codec.js";

// The inspected relay judges a message synchronously while every hook answers synchronously and
// nothing of its direction is pending; these drive it with stages whose promises the test settles
// itself, over in-memory sockets, so every interleaving is chosen, not left to timing.

/** One end of a session in memory: what the relay writes is kept, what the test pushes is read. */
class MemorySocket extends Duplex {
  readonly written: Buffer[] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.written.push(chunk);
    callback();
  }
}

/** Text messages framed as a client frames them (masked), in one buffer: one read. */
function clientFrames(...texts: string[]): Buffer {
  const sink = new MemorySocket();
  const sender = createSender(sink, {});
  for (const text of texts) sender.send(Buffer.from(text), { binary: false, compress: false, fin: true, mask: true });
  return Buffer.concat(sink.written);
}

/** The text messages in what the relay wrote towards the upstream. */
function messagesTo(upstream: MemorySocket): string[] {
  const receiver = createReceiver({}, true, 1 << 20);
  const texts: string[] = [];
  receiver.on("message", (data: Buffer) => texts.push(data.toString()));
  receiver.write(Buffer.concat(upstream.written));
  return texts;
}

/** Lets the relay's microtasks and the sockets' queued events run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function session(stages: Stage[]) {
  const flow = { exchange: { ws: { protocol: null, extensions: null, close_code: null, closed_by: null }, reqBytes: 0, respBytes: 0 }, stages } as unknown as Flow;
  const client = new MemorySocket();
  const upstream = new MemorySocket();
  relayMessages(flow, client, upstream, Buffer.alloc(0), 1 << 20, () => {});
  return { flow, client, upstream };
}

/** A stage that holds each message starting with "slow" until the test lets it go, and passes the rest at once. */
function holdingStage(): { stage: Stage; seen: string[]; release(text: string): void } {
  const held = new Map<string, () => void>();
  const seen: string[] = [];
  const stage = {
    name: "holding",
    webSocketMessage(_flow: Flow, message: WsMessage): WsMessage[] | Promise<WsMessage[]> {
      const text = message.data.toString();
      seen.push(text);
      if (!text.startsWith("slow")) return [message];
      return new Promise((resolve) => held.set(text, () => resolve([message])));
    },
  } as Stage;
  return { stage, seen, release: (text) => held.get(text)!() };
}

describe("the inspected relay's order", () => {
  it("holds a message that arrives in a later read behind one a hook is still judging", async () => {
    const { stage, seen, release } = holdingStage();
    const { client, upstream } = session([stage]);
    client.push(clientFrames("slow0"));
    await settle();
    client.push(clientFrames("slow1"));
    await settle();
    release("slow0");
    await settle();
    // slow0 is out, slow1 is with the hook: fast2 must not pass it.
    expect(seen).toEqual(["slow0", "slow1"]);
    client.push(clientFrames("fast2"));
    await settle();
    expect(messagesTo(upstream)).toEqual(["slow0"]);
    release("slow1");
    await settle();
    expect(messagesTo(upstream)).toEqual(["slow0", "slow1", "fast2"]);
    // With nothing pending, a message is judged and sent within its own read.
    client.push(clientFrames("fast3"));
    expect(messagesTo(upstream)).toEqual(["slow0", "slow1", "fast2", "fast3"]);
  });

  it("holds every message of one read behind the first that a hook is judging", async () => {
    const { stage, release } = holdingStage();
    const { client, upstream } = session([stage]);
    client.push(clientFrames("fast0", "slow1", "fast2", "fast3"));
    await settle();
    expect(messagesTo(upstream)).toEqual(["fast0"]);
    release("slow1");
    await settle();
    expect(messagesTo(upstream)).toEqual(["fast0", "slow1", "fast2", "fast3"]);
  });

  it("judges nothing more once a hook has ended the session", async () => {
    const seen: string[] = [];
    const denying = {
      name: "denying",
      webSocketMessage(_flow: Flow, message: WsMessage): WsMessage[] | WsEnd {
        seen.push(message.data.toString());
        return message.data.toString() === "bad" ? { close: 1008, reason: "policy_denied: test" } : [message];
      },
    } as Stage;
    const { flow, client, upstream } = session([denying]);
    client.push(clientFrames("good", "bad", "after"));
    await settle();
    expect(seen).toEqual(["good", "bad"]);
    expect(messagesTo(upstream)).toEqual(["good"]);
    expect(flow.exchange.ws!.close_code).toBe(1008);
  });

  it("ends the session with 1011, and keeps the process up, when a hook or the framing throws", async () => {
    const throwing = { name: "throwing", webSocketMessage: (): WsMessage[] => { throw new Error("a hook's own bug"); } } as Stage;
    const thrown = session([throwing]);
    expect(() => thrown.client.push(clientFrames("x"))).not.toThrow();
    await settle();
    expect(thrown.flow.exchange.ws!.close_code).toBe(1011);

    // A hook's answer the framer cannot write (data that is not bytes) throws inside send.
    const unframable = { name: "unframable", webSocketMessage: (_flow: Flow, message: WsMessage): WsMessage[] => [{ ...message, data: 42 as unknown as Buffer }] } as Stage;
    const failed = session([unframable]);
    expect(() => failed.client.push(clientFrames("y"))).not.toThrow();
    await settle();
    expect(failed.flow.exchange.ws!.close_code).toBe(1011);
  });
});
