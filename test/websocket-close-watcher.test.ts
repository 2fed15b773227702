import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import * as ws from "ws";
import { CloseFrameWatcher } from "../src/pipeline/websocket-frames.js";

/** ws' own framing (its ESM entry exports Sender; its types do not declare the static frame()). */
const { Sender } = ws as unknown as { Sender: { frame(data: Buffer, options: Record<string, unknown>): Buffer[] } };

/** One frame as ws' own Sender writes it: masked (as a client sends it, ws picks a random key for each frame) or not (as a server does). */
function frame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  const parts = Sender.frame(payload, {
    fin: true,
    opcode,
    mask: masked,
    readOnly: false,
    rsv1: false,
  });
  return Buffer.concat(parts);
}

function closePayload(code: number, reason = ""): Buffer {
  const body = Buffer.alloc(2 + Buffer.byteLength(reason));
  body.writeUInt16BE(code, 0);
  body.write(reason, 2);
  return body;
}

/** Feeds the bytes in pieces of `size` (1: every byte its own chunk, as a slow TCP stream may). */
function watch(bytes: Buffer, size: number): CloseFrameWatcher {
  const watcher = new CloseFrameWatcher();
  for (let i = 0; i < bytes.length; i += size) watcher.push(bytes.subarray(i, i + size));
  return watcher;
}

describe("CloseFrameWatcher (the raw relay's view of who closed, and with what code)", () => {
  const messages = [frame(0x2, randomBytes(64), true), frame(0x1, Buffer.from("x".repeat(300)), true), frame(0x2, randomBytes(70_000), true), frame(0x9, Buffer.from("ping"), true)];

  for (const size of [1, 3, 7, 4096, 1 << 20]) {
    it(`unmasks a client's close code after data frames of every length form (chunks of ${size} bytes)`, () => {
      const watcher = watch(Buffer.concat([...messages, frame(0x8, closePayload(4001, "bye"), true)]), size);
      expect(watcher.sawClose).toBe(true);
      expect(watcher.closeCode).toBe(4001);
    });

    it(`reads a server's unmasked close code (chunks of ${size} bytes)`, () => {
      const watcher = watch(Buffer.concat([frame(0x2, randomBytes(200), false), frame(0x8, closePayload(1001), false)]), size);
      expect(watcher.closeCode).toBe(1001);
    });
  }

  it("takes a close without a body as 1005 and a masked one as its own code, whatever the data frames' masks were", () => {
    expect(watch(Buffer.concat([...messages, frame(0x8, Buffer.alloc(0), true)]), 5).closeCode).toBe(1005);
    // Many masked data frames, each with its own key, then the close: only the close frame's key unmasks the code.
    const many = Array.from({ length: 50 }, () => frame(0x2, randomBytes(64), true));
    expect(watch(Buffer.concat([...many, frame(0x8, closePayload(1000), true)]), 64).closeCode).toBe(1000);
  });

  it("sees no close in data frames alone, and stops looking after the first close", () => {
    const open = watch(Buffer.concat(messages), 11);
    expect(open.sawClose).toBe(false);
    expect(open.closeCode).toBeNull();
    const after = watch(Buffer.concat([frame(0x8, closePayload(3000), true), frame(0x8, closePayload(4999), true)]), 2);
    expect(after.closeCode).toBe(3000);
  });
});
