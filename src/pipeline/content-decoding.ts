import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { getHeaderValues, type RawHeaders } from "../core/headers.js";

/** A decoder for a Content-Encoding: none for identity, "unsupported" for one portcullis cannot read. */
export function decoderFor(encoding: string | undefined): Transform | undefined | "unsupported" {
  if (encoding === undefined || encoding === "" || encoding === "identity") return undefined;
  if (encoding === "gzip" || encoding === "x-gzip") return createGunzip();
  if (encoding === "deflate") return createInflate();
  if (encoding === "br") return createBrotliDecompress();
  return "unsupported";
}

/** The codings a field lists, over one line or several (RFC 9110 5.3), lower-cased, without the ones named in `skip`. */
function codings(headers: RawHeaders, field: string, skip: ReadonlySet<string>): string | undefined {
  const listed = getHeaderValues(headers, field)
    .flatMap((value) => value.split(","))
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== "" && !skip.has(coding));
  return listed.length === 0 ? undefined : listed.join(", ");
}

const NO_CONTENT_CODING = new Set(["identity"]);
const UNDONE_TRANSFER_CODINGS = new Set(["identity", "chunked"]);

/**
 * The body's content coding from every Content-Encoding line (RFC 9110 8.4: a list, applied in
 * order), without identity: one coding, or several joined, which decoderFor refuses. Reading
 * only the first line would let `identity` then `gzip` pass a compressed body off as plain to
 * every stage that reads it.
 */
export function contentCoding(headers: RawHeaders): string | undefined {
  return codings(headers, "content-encoding", NO_CONTENT_CODING);
}

/**
 * A transfer coding other than chunked (RFC 9112 6.1), which Node does not undo: the body would
 * reach the client, and every stage that reads it, still coded, with nothing saying so.
 */
export function unsupportedTransferCoding(headers: RawHeaders): string | undefined {
  return codings(headers, "transfer-encoding", UNDONE_TRANSFER_CODINGS);
}
