import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { getHeader, getHeaderValues, setHeader, stripHopByHop, type RawHeaders } from "../src/core/headers.js";

// The lookups pass over names of another length without lower-casing them. This checks that
// they still find exactly what lower-casing every name finds, for any name in any script.

const reference = {
  get: (raw: RawHeaders, name: string) => {
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name.toLowerCase()) return raw[i + 1];
    return undefined;
  },
  values: (raw: RawHeaders, name: string) => raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name.toLowerCase()),
};

const asked = fc.constantFrom("host", "Content-Length", "keep-alive", "x-request-id", "upgrade", "te", "KEEP-ALIVE");
// Names close to those asked for: case changes, and characters that lower-case to ASCII
// (Kelvin sign K, dotted capital I) or grow when lower-cased (İ becomes i + U+0307).
const lookalike = fc
  .tuple(asked, fc.array(fc.constantFrom("upper", "kelvin", "dotted-i", "suffix"), { maxLength: 2 }))
  .map(([name, changes]) =>
    changes.reduce<string>((text, change) => {
      if (change === "upper") return text.toUpperCase();
      if (change === "kelvin") return text.replace(/k/i, "\u212a");
      if (change === "dotted-i") return text.replace(/i/i, "\u0130");
      return `${text}x`;
    }, name),
  );
const headerName = fc.oneof(lookalike, fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }));
const rawHeaders = fc.array(fc.tuple(headerName, fc.string({ maxLength: 8 })), { maxLength: 12 }).map((pairs) => pairs.flat());

describe("header lookups", () => {
  it("find what lower-casing every name finds", () => {
    fc.assert(
      fc.property(rawHeaders, fc.oneof(asked, headerName), (raw, name) => {
        expect(getHeader(raw, name)).toBe(reference.get(raw, name));
        expect(getHeaderValues(raw, name)).toEqual(reference.values(raw, name));
        const set = setHeader(raw, name, "v");
        expect(reference.values(set, name)).toEqual(["v"]);
        expect(set.filter((_, i) => i % 2 === 0 && set[i]!.toLowerCase() !== name.toLowerCase())).toEqual(
          raw.filter((_, i) => i % 2 === 0 && raw[i]!.toLowerCase() !== name.toLowerCase()),
        );
      }),
      { numRuns: 5_000 },
    );
  });

  it("match the Kelvin sign as k, and İ in a name asked for, as lower-casing does", () => {
    expect(getHeader(["\u212aeep-Alive", "1"], "keep-alive")).toBe("1");
    expect(getHeader(["\u0130", "1"], "i")).toBeUndefined();
    // Found by the property above: the name asked for grows when lower-cased, the header's does too.
    expect(getHeader(["keep-al\u0130vex", "1"], "keep-al\u0130vex")).toBe("1");
    expect(getHeader(["keep-ali\u0307vex", "2"], "KEEP-AL\u0130VEX")).toBe("2");
  });

  it("rest on this: İ is the only character whose lower case is of another length", () => {
    const changing: number[] = [];
    for (let code = 0; code <= 0x10ffff; code++) {
      if (code >= 0xd800 && code <= 0xdfff) continue;
      const text = String.fromCodePoint(code);
      if (text.toLowerCase().length !== text.length) changing.push(code);
    }
    expect(changing).toEqual([0x130]);
    expect("\u0130".toLowerCase()).toBe("i\u0307");
  });
});

describe("hop-by-hop fields", () => {
  it("HTTP2-Settings (RFC 9113 3.2.1) never travels on, like the other connection-specific fields", () => {
    const raw = ["Host", "a.test", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA", "Keep-Alive", "timeout=5", "X-Kept", "1"];
    expect(stripHopByHop(raw)).toEqual(["Host", "a.test", "X-Kept", "1"]);
  });
});
