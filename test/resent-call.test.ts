import { describe, expect, it } from "vitest";
import type { UpstreamCall } from "../src/core/messages.js";
import { ResentCall } from "../src/transport/upstream/resent-call.js";

/** An upstream call that records what it was told. */
function recording(): UpstreamCall & { said: string[] } {
  const said: string[] = [];
  return {
    said,
    write: (chunk) => {
      said.push(`write ${chunk.toString()}`);
      return true;
    },
    onDrain: () => void said.push("onDrain"),
    end: (trailers) => void said.push(`end ${JSON.stringify(trailers ?? [])}`),
    abort: () => void said.push("abort"),
  };
}

describe("ResentCall: a bodyless call sent a second time", () => {
  it("tells the second attempt the end the first was told (an HTTP/1.1 fallback needs it)", () => {
    const call = new ResentCall();
    const first = recording();
    call.use(first);
    call.end(["X-T", "1"]);
    const second = recording();
    call.use(second);
    expect(first.said).toEqual(['end ["X-T","1"]']);
    expect(second.said).toEqual(['end ["X-T","1"]']);
  });

  it("aborts the attempt in use, and any later one at once", () => {
    const call = new ResentCall();
    const first = recording();
    call.use(first);
    call.abort();
    expect(first.said).toEqual(["abort"]);
    expect(call.aborted).toBe(true);
    const late = recording();
    call.use(late);
    expect(late.said).toEqual(["abort"]);
  });
});
