import type { Http2Stream } from "node:http2";

/**
 * RST_STREAM with `code`, and nothing before it. Node's close() first ends the writable side,
 * and that END_STREAM reaches the peer ahead of the reset: a body cut off mid-way would look
 * complete to it. Marking the side as ending (what close() checks) skips that step.
 */
export function resetStream(stream: Http2Stream, code: number): void {
  if (stream.closed || stream.destroyed) return;
  const writable = (stream as unknown as { _writableState?: { ending: boolean } })._writableState;
  if (writable && !writable.ending) writable.ending = true;
  stream.close(code);
}
