import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatAuthority, parseAuthority } from "../src/pipeline/target.js";

describe("formatAuthority", () => {
  it("brackets exactly the IPv6 literals, as testing every host with isIP would", () => {
    const host = fc.oneof(fc.ipV6(), fc.ipV4(), fc.ipV4Extended(), fc.domain(), fc.string(), fc.constantFrom("::1", "::ffff:127.0.0.1", "fe80::1%eth0", "localhost", "a:b", ":"));
    fc.assert(
      fc.property(host, fc.integer({ min: 1, max: 65535 }), fc.constantFrom(undefined, "http" as const, "https" as const), (name, port, scheme) => {
        const bracketed = isIP(name) === 6 ? `[${name}]` : name;
        const expected = scheme && port === (scheme === "http" ? 80 : 443) ? bracketed : `${bracketed}:${port}`;
        expect(formatAuthority(name, port, scheme)).toBe(expected);
      }),
      { numRuns: 5000 },
    );
  });

  it("is read back by parseAuthority as the same host and port", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV6(), fc.ipV4(), fc.domain()), fc.integer({ min: 1, max: 65535 }), (name, port) => {
        const alone = parseAuthority(isIP(name) === 6 ? `[${name}]` : name);
        expect(parseAuthority(formatAuthority(name, port))).toEqual({ host: alone?.host, port });
      }),
      { numRuns: 2000 },
    );
  });
});
