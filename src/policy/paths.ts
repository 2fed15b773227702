import picomatch from "picomatch";

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * The path a rule is matched against: query dropped, percent-decoding undone (so %2e%2e is
 * ".."), backslashes and repeated slashes folded, dot segments resolved. A request cannot
 * dodge a rule by spelling its path differently from how the upstream will read it.
 */
export function normalisePath(rawPath: string): string {
  const pathOnly = rawPath.split(/[?#]/, 1)[0] ?? "/";
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
