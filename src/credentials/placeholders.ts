import { ProxyError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import { getHeader, removeHeaders, setHeader } from "../core/headers.js";
import type { OutgoingRequest, SecretResolver } from "../core/messages.js";
import { escapeRegExp } from "../log/secret-forms.js";
import { anyHostMatches } from "../policy/hosts.js";
import type { Placeholder } from "../policy/schema.js";
import { assertHeaderSafe, credentialUnavailable } from "./inject.js";

export type Place = "header" | "query" | "path" | "body";

/** Text bodies up to this size are searched and substituted; larger ones stream untouched. */
export const MAX_BODY_BYTES = 64 * 1024;

export interface PlaceholderHit {
  placeholder: Placeholder;
  places: Set<Place>;
}

function splitPath(path: string): { pathname: string; query: string } {
  const at = path.indexOf("?");
  return at < 0 ? { pathname: path, query: "" } : { pathname: path.slice(0, at), query: path.slice(at) };
}

/**
 * How much of a body must be read before forwarding: whenever placeholders exist, its first
 * 64 KiB (all of it when shorter), whatever its type or framing, so a placeholder there is
 * caught on its way to the wrong host (and swapped where `in: [body]` allows). Beyond that
 * the body streams unread.
 */
export function bodyStartToRead(placeholders: readonly Placeholder[], hasBody: boolean): number {
  if (placeholders.length === 0 || !hasBody) return 0;
  return MAX_BODY_BYTES;
}

const patterns = new Map<string, RegExp>();

/**
 * The placeholder however a server might decode it: each of its bytes as written, percent-encoded
 * (either hex case, or encoded twice), as a JSON \u escape, and a space also as "+". Matched on
 * the latin1 view of the bytes, so one pattern serves headers, URLs, bodies and messages.
 */
export function placeholderPattern(needle: string): RegExp {
  let pattern = patterns.get(needle);
  if (pattern) return new RegExp(pattern.source, "g");
  const hexCase = (digit: string) => (/[a-f]/i.test(digit) ? `[${digit.toLowerCase()}${digit.toUpperCase()}]` : digit);
  const parts = [...Buffer.from(needle, "utf8")].map((byte) => {
    const hex = byte.toString(16).padStart(2, "0");
    const flexible = `${hexCase(hex[0]!)}${hexCase(hex[1]!)}`;
    const alternatives = [escapeRegExp(String.fromCharCode(byte)), `%${flexible}`, `%25${flexible}`];
    if (byte < 0x80) alternatives.push(`\\\\u00${flexible}`);
    if (byte === 0x20) alternatives.push("\\+");
    return `(?:${alternatives.join("|")})`;
  });
  pattern = new RegExp(parts.join(""), "g");
  patterns.set(needle, pattern);
  return new RegExp(pattern.source, "g");
}

/** Whether text (a latin1 view of bytes) holds the placeholder in any spelling. */
export function holdsPlaceholder(text: string, needle: string): boolean {
  return placeholderPattern(needle).test(text);
}

/** Every spelling of the placeholder in text replaced by `value`. */
export function replacePlaceholder(text: string, needle: string, value: string): string {
  return text.replace(placeholderPattern(needle), () => value);
}

/** Where each placeholder occurs in the outgoing request (case-sensitive, as the agent wrote it). */
export function findPlaceholders(placeholders: readonly Placeholder[], outgoing: OutgoingRequest): PlaceholderHit[] {
  const hits: PlaceholderHit[] = [];
  const { pathname, query } = splitPath(outgoing.path);
  const bodyText = outgoing.body?.toString("latin1");
  for (const placeholder of placeholders) {
    const needle = placeholder.placeholder;
    const places = new Set<Place>();
    for (let i = 1; i < outgoing.headers.length; i += 2) if (holdsPlaceholder(outgoing.headers[i]!, needle)) places.add("header");
    if (holdsPlaceholder(query, needle)) places.add("query");
    if (holdsPlaceholder(pathname, needle)) places.add("path");
    if (bodyText !== undefined && holdsPlaceholder(bodyText, needle)) places.add("body");
    if (places.size) hits.push({ placeholder, places });
  }
  return hits;
}

/** A placeholder on its way to a host not listed for it is an exfiltration attempt: 403. */
export function checkPlaceholderHosts(hits: readonly PlaceholderHit[], exchange: Exchange): void {
  for (const { placeholder, places } of hits) {
    if (anyHostMatches(placeholder.hosts, exchange.target.host)) continue;
    exchange.placeholders.push(placeholder.name);
    throw new ProxyError(
      "policy_denied",
      `placeholder sent to a host not allowed to receive it: placeholder "${placeholder.name}" (in ${[...places].join(", ")}) may only go to ${placeholder.hosts.join(", ")}`,
      placeholder.name,
    );
  }
}

/** Swaps each placeholder for its real value where the policy allows (`in`), fixing Content-Length for bodies. */
export async function substitutePlaceholders(hits: readonly PlaceholderHit[], exchange: Exchange, outgoing: OutgoingRequest, secrets: SecretResolver): Promise<void> {
  for (const { placeholder, places } of hits) {
    const wanted = [...places].filter((place) => placeholder.in.includes(place));
    // A secret never travels in cleartext unless the placeholder lists http.
    if (wanted.length === 0 || !placeholder.schemes.includes(exchange.target.scheme)) continue;
    const what = `placeholder "${placeholder.name}"`;
    let value: string;
    try {
      value = await secrets.resolve(placeholder.secret);
    } catch (error) {
      throw credentialUnavailable(what, error);
    }
    const needle = placeholder.placeholder;
    if (wanted.includes("header")) {
      assertHeaderSafe(what, value);
      const raw = Buffer.from(value, "utf8").toString("latin1");
      outgoing.headers = outgoing.headers.map((item, index) => (index % 2 === 1 ? replacePlaceholder(item, needle, raw) : item));
      for (let i = 0; i < outgoing.headers.length; i += 2) {
        if (outgoing.headers[i + 1]!.includes(value)) exchange.redactedHeaders.add(outgoing.headers[i]!.toLowerCase());
      }
    }
    if (wanted.includes("path") || wanted.includes("query")) {
      const { pathname, query } = splitPath(outgoing.path);
      const swap = (text: string) => replacePlaceholder(text, needle, encodeURIComponent(value));
      outgoing.path = (wanted.includes("path") ? swap(pathname) : pathname) + (wanted.includes("query") ? swap(query) : query);
    }
    // A body whose length was announced can only change when portcullis holds all of it.
    const lengthFixed = getHeader(outgoing.headers, "content-length") !== undefined;
    if (wanted.includes("body") && outgoing.body && !(outgoing.bodyContinues && lengthFixed)) {
      outgoing.body = Buffer.from(replacePlaceholder(outgoing.body.toString("latin1"), needle, Buffer.from(value, "utf8").toString("latin1")), "latin1");
      if (lengthFixed) outgoing.headers = setHeader(removeHeaders(outgoing.headers, new Set(["content-length"])), "Content-Length", String(outgoing.body.length));
    }
    exchange.placeholders.push(placeholder.name);
    exchange.injectedSecrets.push(value);
  }
}
