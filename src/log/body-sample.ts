const TEXT_TYPES = /^(text\/|application\/([\w.+-]*\+)?(json|xml|x-www-form-urlencoded|javascript|graphql|x-ndjson|yaml)\b)/i;

export function isTextContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && TEXT_TYPES.test(contentType.trim());
}

/** Keeps the first `limit` bytes of a text body for the audit line; costs nothing past the limit. */
export class BodySample {
  private readonly chunks: Buffer[] = [];
  private kept = 0;

  constructor(private readonly limit: number) {}

  add(chunk: Buffer): void {
    if (this.kept >= this.limit) return;
    const part = chunk.subarray(0, this.limit - this.kept);
    this.chunks.push(part);
    this.kept += part.length;
  }

  text(): string | undefined {
    if (this.kept === 0) return undefined;
    return Buffer.concat(this.chunks).toString("utf8");
  }
}
