/** Just enough of the HTTP/2 wire format (RFC 9113 4.1, RFC 7541) to misbehave on purpose. */

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, CONTINUATION: 0x9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 5.1). */
function integer(value: number, prefixBits: number, firstByte = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const bytes = [firstByte | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

function literal(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  return Buffer.concat([integer(bytes.length, 7), bytes]);
}

/** A header block of literal fields without indexing (RFC 7541 6.2.2). */
export function headerBlock(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.flatMap(([name, value]) => [Buffer.from([0x00]), literal(name), literal(value)]));
}

export function requestBlock(authority: string, path: string, extra: [string, string][] = []): Buffer {
  return headerBlock([[":method", "GET"], [":scheme", "https"], [":authority", authority], [":path", path], ...extra]);
}

/** Splits a byte stream into frames as they arrive. */
export class FrameReader {
  private buffer = Buffer.alloc(0);
  readonly frames: { type: number; flags: number; streamId: number; payload: Buffer }[] = [];

  push(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < 9 + length) return;
      this.frames.push({ type: this.buffer[3]!, flags: this.buffer[4]!, streamId: this.buffer.readUInt32BE(5) & 0x7fffffff, payload: this.buffer.subarray(9, 9 + length) });
      this.buffer = this.buffer.subarray(9 + length);
    }
  }

  goaway(): { lastStreamId: number; code: number } | undefined {
    const found = this.frames.find((f) => f.type === FRAME.GOAWAY);
    return found && { lastStreamId: found.payload.readUInt32BE(0) & 0x7fffffff, code: found.payload.readUInt32BE(4) };
  }
}
