import type { Readable } from "node:stream";
import { ProxyError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import { getHeader, isChunked, removeHeaders, setHeader, type RawHeaders } from "../core/headers.js";
import type { OutgoingRequest, SecretResolver } from "../core/messages.js";
import { isTextContentType } from "../log/body-sample.js";
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

/** Whether the body must be read before forwarding: only when a placeholder may sit in it. */
export function bodyNeedsReading(placeholders: readonly Placeholder[], headers: RawHeaders): boolean {
  if (!placeholders.some((placeholder) => placeholder.in.includes("body"))) return false;
  if (isChunked(headers) || !isTextContentType(getHeader(headers, "content-type"))) return false;
  const length = Number(getHeader(headers, "content-length") ?? 0);
  return length > 0 && length <= MAX_BODY_BYTES;
}

export async function readBody(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Where each placeholder occurs in the outgoing request (case-sensitive, as the agent wrote it). */
export function findPlaceholders(placeholders: readonly Placeholder[], outgoing: OutgoingRequest): PlaceholderHit[] {
  const hits: PlaceholderHit[] = [];
  const { pathname, query } = splitPath(outgoing.path);
  const bodyText = outgoing.body?.toString("latin1");
  for (const placeholder of placeholders) {
    const needle = placeholder.placeholder;
    const encoded = encodeURIComponent(needle);
    const places = new Set<Place>();
    for (let i = 1; i < outgoing.headers.length; i += 2) if (outgoing.headers[i]!.includes(needle)) places.add("header");
    if (query.includes(needle) || query.includes(encoded)) places.add("query");
    if (pathname.includes(needle) || pathname.includes(encoded)) places.add("path");
    if (bodyText?.includes(Buffer.from(needle).toString("latin1"))) places.add("body");
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
    if (wanted.length === 0) continue;
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
      outgoing.headers = outgoing.headers.map((item, index) => (index % 2 === 1 ? item.split(needle).join(value) : item));
      for (let i = 0; i < outgoing.headers.length; i += 2) {
        if (outgoing.headers[i + 1]!.includes(value)) exchange.redactedHeaders.add(outgoing.headers[i]!.toLowerCase());
      }
    }
    if (wanted.includes("path") || wanted.includes("query")) {
      const { pathname, query } = splitPath(outgoing.path);
      const swap = (text: string) => text.split(needle).join(encodeURIComponent(value)).split(encodeURIComponent(needle)).join(encodeURIComponent(value));
      outgoing.path = (wanted.includes("path") ? swap(pathname) : pathname) + (wanted.includes("query") ? swap(query) : query);
    }
    if (wanted.includes("body") && outgoing.body) {
      outgoing.body = Buffer.from(outgoing.body.toString("utf8").split(needle).join(value), "utf8");
      outgoing.headers = setHeader(removeHeaders(outgoing.headers, new Set(["content-length"])), "Content-Length", String(outgoing.body.length));
    }
    exchange.placeholders.push(placeholder.name);
    exchange.injectedSecrets.push(value);
  }
}
