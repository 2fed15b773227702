import { Readable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EchoScrubber, scrubBytes, scrubText } from "../src/credentials/echo-scrub.js";
import { Scrubber } from "../src/log/scrub.js";

/** Property tests: random secrets, random spellings a client might decode, random chunk splits. */
const secretChars = fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=:@!$&'()*,; ".split(""));
const secret = fc.array(secretChars, { minLength: 12, maxLength: 40 }).map((chars) => chars.join(""));

type Spell = (value: string, choices: boolean[]) => string;
const percent = (byte: number, upper: boolean) => `%${byte.toString(16).padStart(2, "0")[upper ? "toUpperCase" : "toLowerCase"]()}`;
/** Each family a decoder reads back as the value; `choices` pick which bytes are encoded and how. */
const spellings: Record<string, Spell> = {
  raw: (value) => value,
  json: (value) => JSON.stringify(value).slice(1, -1),
  "percent, any subset, either case": (value, choices) => [...Buffer.from(value)].map((byte, i) => (choices[i % choices.length] ? percent(byte, choices[(i + 1) % choices.length]!) : String.fromCharCode(byte))).join(""),
  "percent, every byte": (value, choices) => [...Buffer.from(value)].map((byte) => percent(byte, choices[0]!)).join(""),
  "percent twice": (value) => [...Buffer.from(value)].map((byte) => `%25${byte.toString(16).padStart(2, "0")}`).join(""),
  "form (+ for space)": (value) => encodeURIComponent(value).replace(/%20/g, "+"),
  "json \\u escapes, some bytes": (value, choices) => [...value].map((char, i) => (choices[i % choices.length] ? `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}` : char)).join(""),
  base64: (value) => Buffer.from(value).toString("base64"),
  hex: (value) => Buffer.from(value).toString("hex"),
};
const spelling = fc.constantFrom(...Object.keys(spellings));
const choices = fc.array(fc.boolean(), { minLength: 1, maxLength: 8 });
const filler = fc.string({ maxLength: 30 }).map((text) => text.replace(/[^ -~]/g, "x"));

async function throughScrubber(text: string, values: string[], cuts: number[]): Promise<string> {
  const bytes = Buffer.from(text, "latin1");
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let last = 0;
  for (const point of [...points, bytes.length]) {
    if (point > last) chunks.push(bytes.subarray(last, point));
    last = Math.max(last, point);
  }
  const out: Buffer[] = [];
  const scrubber = new EchoScrubber(values);
  scrubber.on("data", (chunk: Buffer) => out.push(chunk));
  const ended = new Promise((resolve) => scrubber.once("end", resolve));
  Readable.from(chunks).pipe(scrubber);
  await ended;
  return Buffer.concat(out).toString("latin1");
}

describe("echo scrubbing covers every spelling, at any chunk boundary", () => {
  it("streams: no spelled secret survives, split anywhere", async () => {
    await fc.assert(
      fc.asyncProperty(secret, spelling, choices, filler, filler, fc.array(fc.nat(400), { maxLength: 6 }), async (value, family, picks, before, after, cuts) => {
        const spelled = spellings[family]!(value, picks);
        const out = await throughScrubber(`${before}${spelled}${after}`, [value], cuts);
        expect(out).not.toContain(spelled);
        expect(out).toContain("[REDACTED]");
      }),
      { numRuns: 400 },
    );
  });

  it("whole texts and messages, and the log scrubber, the same", () => {
    fc.assert(
      fc.property(secret, spelling, choices, filler, (value, family, picks, around) => {
        const spelled = spellings[family]!(value, picks);
        const text = `${around}${spelled}${around}`;
        expect(scrubText(text, [value])).not.toContain(spelled);
        expect(scrubBytes(Buffer.from(text, "latin1"), [value]).data.toString("latin1")).not.toContain(spelled);
        const log = new Scrubber();
        log.add(value);
        expect(log.scrub(text)).not.toContain(spelled);
      }),
      { numRuns: 400 },
    );
  });

  it("leaves text without a secret untouched, whatever it is cut into", async () => {
    await fc.assert(
      fc.asyncProperty(secret, fc.string({ maxLength: 200 }).map((text) => text.replace(/[^ -~]/g, "y")), fc.array(fc.nat(200), { maxLength: 5 }), async (value, text, cuts) => {
        fc.pre(!text.includes(value.slice(0, 6)) && !text.includes("%") && !text.includes("\\"));
        expect(await throughScrubber(text, [value], cuts)).toBe(text);
      }),
      { numRuns: 200 },
    );
  });
});
