/** One parameter of a query string: as written on the wire, and decoded. */
export interface QueryPair {
  raw: string;
  name: string;
  value: string;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // Not valid percent-encoding: signed as written, which is what a server that cannot decode it sees too.
    return text;
  }
}

/** `a=1&b&c=%20` → its pairs in order; `b` has the value "" (SigV4 signs it as `b=`). */
export function parseQuery(query: string): QueryPair[] {
  return query
    .split("&")
    .filter((raw) => raw !== "")
    .map((raw) => {
      const at = raw.indexOf("=");
      return at < 0 ? { raw, name: decode(raw), value: "" } : { raw, name: decode(raw.slice(0, at)), value: decode(raw.slice(at + 1)) };
    });
}

/** The query as the signer takes it: decoded names to a value, or the values of a repeated name. */
export function signerQuery(pairs: readonly QueryPair[]): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const { name, value } of pairs) {
    const had = query[name];
    query[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return query;
}

/** RFC 3986 encoding as SigV4 canonicalises it: everything but unreserved characters. */
export function awsEncode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Splits `/path?query#fragment` into path and query (the fragment never travels). */
export function splitTarget(target: string): { path: string; query: string } {
  const hashAt = target.indexOf("#");
  const withoutHash = hashAt >= 0 ? target.slice(0, hashAt) : target;
  const queryAt = withoutHash.indexOf("?");
  return queryAt >= 0 ? { path: withoutHash.slice(0, queryAt), query: withoutHash.slice(queryAt + 1) } : { path: withoutHash, query: "" };
}
