/** Longest X-Portcullis-Reason value (and CONNECT reason phrase) written; longer reasons are cut with "...". */
export const MAX_REASON_LENGTH = 200;

/**
 * A reason made safe for a header value or a status line's reason phrase (RFC 9110 5.5,
 * RFC 9112 4): printable ASCII only, whitespace runs folded to one space, bounded length.
 * The caller scrubs secrets first; this only makes the text fit the wire.
 */
export function headerReason(text: string): string {
  const folded = text
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .replace(/\s+/g, " ")
    .replace(/[^\x20-\x7e]/g, "?")
    .trim();
  return folded.length > MAX_REASON_LENGTH ? `${folded.slice(0, MAX_REASON_LENGTH - 3)}...` : folded;
}
