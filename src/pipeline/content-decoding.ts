import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";

/** A decoder for a Content-Encoding: none for identity, "unsupported" for one portcullis cannot read. */
export function decoderFor(encoding: string | undefined): Transform | undefined | "unsupported" {
  if (encoding === undefined || encoding === "" || encoding === "identity") return undefined;
  if (encoding === "gzip" || encoding === "x-gzip") return createGunzip();
  if (encoding === "deflate") return createInflate();
  if (encoding === "br") return createBrotliDecompress();
  return "unsupported";
}
