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

/**
 * Every plausible reading of a path, the first being normalisePath's. Servers disagree on
 * what an encoded slash is (a separator once decoded, or part of a segment) and on ";params"
 * in a segment (Tomcat drops them, "..;" then climbs a level). Where the path leaves room for
 * such a disagreement, each reading is returned and the policy must agree with all of them.
 */
export function pathReadings(rawPath: string): string[] {
  const end = rawPath.search(/[?#]/);
  const pathOnly = end < 0 ? rawPath : rawPath.slice(0, end);
  const readings = [normalisePath(pathOnly)];
  if (ENCODED_SEPARATOR.test(pathOnly)) readings.push(normalisePath(pathOnly.replace(/%(2f|5c)/gi, "%25$1")));
  if (pathOnly.includes(";")) readings.push(normalisePath(pathOnly.replace(/;[^/]*/g, "")));
  return [...new Set(readings)];
}

const compiled = new Map<string, (path: string) => boolean>();

/** A glob on the normalised path; `**` crosses slashes, `*` does not. Compiled once per pattern. */
export function pathMatches(glob: string, normalisedPath: string): boolean {
  let matcher = compiled.get(glob);
  if (!matcher) {
    matcher = picomatch(glob, { dot: true });
    compiled.set(glob, matcher);
  }
  return matcher(normalisedPath);
}
