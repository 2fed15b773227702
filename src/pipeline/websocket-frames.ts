const OPCODE_CLOSE = 0x8;

/**
 * Reads WebSocket frame headers passing by, to learn who sent the first close frame and
 * its code, without buffering or altering a byte. It stops looking after the close frame.
 */
export class CloseFrameWatcher {
  closeCode: number | null = null;
  sawClose = false;
  private readonly header = Buffer.alloc(14);
  private headerLength = 0;
  private remaining = 0;
  private opcode = 0;
  /** The close frame's masking key (a client's frames are masked); only a close frame's payload is ever read. */
  private readonly maskKey = Buffer.alloc(4);
  private masked = false;
  private payloadOffset = 0;
  private readonly codeBytes: number[] = [];
  private inPayload = false;

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.sawClose) {
      if (this.inPayload) {
        const take = Math.min(this.remaining, chunk.length - i);
        if (this.opcode === OPCODE_CLOSE) {
          for (let k = 0; k < take && this.codeBytes.length < 2; k++) {
            const byte = chunk[i + k]!;
            this.codeBytes.push(this.masked ? byte ^ this.maskKey[(this.payloadOffset + k) % 4]! : byte);
          }
        }
        this.payloadOffset += take;
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.endFrame();
        continue;
      }
      this.header[this.headerLength++] = chunk[i++]!;
      const needed = this.headerSize();
      if (needed !== undefined && this.headerLength === needed) this.startPayload();
    }
  }

  /** Header length once its first two bytes are known. */
  private headerSize(): number | undefined {
    if (this.headerLength < 2) return undefined;
    const length7 = this.header[1]! & 0x7f;
    const masked = (this.header[1]! & 0x80) !== 0;
    return 2 + (length7 === 126 ? 2 : length7 === 127 ? 8 : 0) + (masked ? 4 : 0);
  }

  private startPayload(): void {
    this.opcode = this.header[0]! & 0x0f;
    const length7 = this.header[1]! & 0x7f;
    const masked = (this.header[1]! & 0x80) !== 0;
    let offset = 2;
    if (length7 === 126) {
      this.remaining = this.header.readUInt16BE(2);
      offset = 4;
    } else if (length7 === 127) {
      this.remaining = Number(this.header.readBigUInt64BE(2));
      offset = 10;
    } else {
      this.remaining = length7;
    }
    // Kept only for a close frame: every frame a client sends is masked, and a copy of each key cost an allocation a message.
    this.masked = masked && this.opcode === OPCODE_CLOSE;
    if (this.masked) this.header.copy(this.maskKey, 0, offset, offset + 4);
    this.headerLength = 0;
    this.payloadOffset = 0;
    this.codeBytes.length = 0;
    this.inPayload = true;
    if (this.remaining === 0) this.endFrame();
  }

  private endFrame(): void {
    this.inPayload = false;
    if (this.opcode !== OPCODE_CLOSE) return;
    this.sawClose = true;
    // A close frame without a body means "no status code" (1005, RFC 6455 7.1.5).
    this.closeCode = this.codeBytes.length === 2 ? (this.codeBytes[0]! << 8) | this.codeBytes[1]! : 1005;
  }
}
