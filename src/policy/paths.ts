import picomatch from "picomatch";

/**
 * Decodes every valid %XX escape on its own, as lenient servers do: one malformed escape must
 * not leave the rest of the path encoded (and a rule on it unmatched). Bytes that do not form
 * UTF-8 stay escaped.
 */
function decode(path: string): string {
  return path.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run.replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => (Number.parseInt(hex, 16) < 0x80 ? String.fromCharCode(Number.parseInt(hex, 16)) : escape));
    }
  });
}

/**
 * A path normalisePath would return unchanged: a leading slash, then segments with nothing
 * to decode or fold (no %, no backslash, not empty, not "." or ".."), an optional trailing slash.
 */
const ALREADY_NORMAL = /^\/(?:(?!\.\.?(?:\/|$))[^/%\\]+(?:\/|$))*$/;

/**
 * The path a rule is matched against: query dropped, percent-decoding undone (so %2e%2e is
 * ".."), backslashes and repeated slashes folded, dot segments resolved. A request cannot
 * dodge a rule by spelling its path differently from how the upstream will read it.
 */
export function normalisePath(rawPath: string): string {
  const end = rawPath.search(/[?#]/);
  const pathOnly = end < 0 ? rawPath : rawPath.slice(0, end);
  if (ALREADY_NORMAL.test(pathOnly)) return pathOnly;
  const decoded = decode(pathOnly).replace(/\\/g, "/");
  const out: string[] = [];
  for (const segment of decoded.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") out.pop();
    else out.push(segment);
  }
  const trailing = decoded.endsWith("/") && out.length > 0 ? "/" : "";
  return `/${out.join("/")}${trailing}`;
}

const ENCODED_SEPARATOR = /%2f|%5c/i;
/** What some servers drop from the end of a segment (Windows and IIS: dots and spaces; others: whitespace). */
const TRAILING_IN_SEGMENT = /[\s.]+(?=\/|$)/;

/** Raw bytes of a request target (latin1 in Node's strings) as the UTF-8 text they are. */
function asText(path: string): string {
  return /[\x80-\xff]/.test(path) ? Buffer.from(path, "latin1").toString("utf8") : path;
}

/**
 * Every plausible reading of a path, the first being normalisePath's. Servers disagree on
 * what an encoded slash is (a separator once decoded, or part of a segment), on ";params"
 * in a segment (Tomcat drops them, "..;" then climbs a level), on decoding twice, on Unicode
 * compatibility forms (a fullwidth "．" or "／" read as "." or "/" after NFKC), on a NUL
 * (where C code stops reading) and on trailing dots and whitespace in a segment (which Windows
 * drops). Where the path leaves room for such a disagreement, each reading is returned and the
 * policy must agree with all of them.
 */
export function pathReadings(rawPath: string): string[] {
  const end = rawPath.search(/[?#]/);
  const pathOnly = end < 0 ? rawPath : rawPath.slice(0, end);
  const readings = [normalisePath(pathOnly)];
  if (ALREADY_NORMAL.test(pathOnly) && !pathOnly.includes(";") && !TRAILING_IN_SEGMENT.test(pathOnly) && !/[^\x00-\x7f]/.test(pathOnly)) return readings;
  if (ENCODED_SEPARATOR.test(pathOnly)) readings.push(normalisePath(pathOnly.replace(/%(2f|5c)/gi, "%25$1")));
  if (pathOnly.includes(";")) readings.push(normalisePath(pathOnly.replace(/;[^/]*/g, "")));
  const once = decode(asText(pathOnly));
  // Decoded a second time: "%252e%252e" is ".." to a server that decodes twice.
  if (/%[0-9A-Fa-f]{2}/.test(once)) readings.push(normalisePath(once));
  const compatible = once.normalize("NFKC");
  if (compatible !== once) readings.push(normalisePath(compatible.replace(/%/g, "%25")));
  if (once.includes("\0")) readings.push(normalisePath(once.split("\0")[0]!.replace(/%/g, "%25")));
  if (TRAILING_IN_SEGMENT.test(once)) {
    const trimmed = once
      .split("/")
      .map((segment) => (/^\.+$/.test(segment) ? segment : segment.replace(/[\s.]+$/, "")))
      .join("/");
    readings.push(normalisePath(trimmed.replace(/%/g, "%25")));
  }
  return [...new Set(readings)];
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Why a path cannot be read as UTF-8, if it cannot: raw bytes or escapes that form an overlong
 * sequence, a stray continuation byte, a surrogate ... Servers decode those differently (or
 * not at all), so such a path is refused (400) rather than judged.
 */
export function pathEncodingProblem(rawPath: string): string | undefined {
  const end = rawPath.search(/[?#]/);
  const pathOnly = end < 0 ? rawPath : rawPath.slice(0, end);
  // Plain ASCII with no escapes (most paths) has nothing to get wrong.
  if (!/[%\x80-\xff]/.test(pathOnly)) return undefined;
  const check = (bytes: Buffer, what: string) => {
    if (!bytes.some((byte) => byte >= 0x80)) return undefined;
    try {
      STRICT_UTF8.decode(bytes);
      return undefined;
    } catch {
      return `the path has ${what} that are not valid UTF-8 (overlong or malformed)`;
    }
  };
  const raw = check(Buffer.from(pathOnly.replace(/%[0-9A-Fa-f]{2}/g, ""), "latin1"), "bytes");
  if (raw) return raw;
  for (const text of [pathOnly, decode(asText(pathOnly))]) {
    for (const run of text.match(/(?:%[0-9A-Fa-f]{2})+/g) ?? []) {
      const problem = check(Buffer.from(run.replace(/%/g, ""), "hex"), "percent-encoded bytes");
      if (problem) return problem;
    }
  }
  return undefined;
}

const compiled = new Map<string, (path: string) => boolean>();

/**
 * Whether a rule's `paths` (none: every path) take in the request: any reading of its path
 * matching puts it in scope. A rule that restricts or inspects must not be dodged by a spelling
 * the upstream reads as one of its paths (`/v1;x/messages` is `/v1/messages` to Tomcat).
 */
export function pathsInScope(globs: readonly string[] | undefined, pathReadings: readonly string[]): boolean {
  return !globs || globs.some((glob) => pathReadings.some((path) => pathMatches(glob, path)));
}

/** A glob on the normalised path; `**` crosses slashes, `*` does not. Compiled once per pattern. */
export function pathMatches(glob: string, normalisedPath: string): boolean {
  let matcher = compiled.get(glob);
  if (!matcher) {
    matcher = picomatch(glob, { dot: true });
    compiled.set(glob, matcher);
  }
  return matcher(normalisedPath);
}
