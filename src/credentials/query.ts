/** Sets (or replaces) one query parameter, leaving every other byte of the path as the client wrote it. */
export function setQueryParam(path: string, name: string, value: string): string {
  const hashAt = path.indexOf("#");
  const withoutHash = hashAt >= 0 ? path.slice(0, hashAt) : path;
  const queryAt = withoutHash.indexOf("?");
  const base = queryAt >= 0 ? withoutHash.slice(0, queryAt) : withoutHash;
  const query = queryAt >= 0 ? withoutHash.slice(queryAt + 1) : "";
  const kept = query.split("&").filter((pair) => {
    if (pair === "") return false;
    const key = pair.split("=", 1)[0]!;
    let decoded = key;
    try {
      decoded = decodeURIComponent(key.replace(/\+/g, " "));
    } catch {
      // A malformed key is kept as it is; it cannot be the one we set.
    }
    return decoded !== name;
  });
  kept.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
  return `${base}?${kept.join("&")}`;
}
