/** What JSON.parse does not say about a text it accepted. */
export interface JsonScan {
  /** For a top-level array: each element's own text, as written (so a forwarded message keeps its bytes). */
  elements: string[] | undefined;
  /** A key some object repeats: parsers disagree on which value wins (first, last, error). */
  duplicateKey: string | undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

interface Container {
  object: boolean;
  keys: Set<string> | undefined;
  /** In an object: the next string is a key. */
  expectKey: boolean;
}

/**
 * One pass over a text JSON.parse accepted (so it is well formed): where the elements of a
 * top-level array begin and end, and the first key an object repeats.
 */
export function scanJson(text: string): JsonScan {
  const stack: Container[] = [];
  let topArray = false;
  let elementStart = -1;
  const elements: string[] = [];
  let duplicateKey: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === QUOTE) {
      let end = i + 1;
      while (end < text.length && text.charCodeAt(end) !== QUOTE) end += text.charCodeAt(end) === BACKSLASH ? 2 : 1;
      const top = stack.at(-1);
      if (top?.object && top.expectKey) {
        const token = text.slice(i + 1, end);
        const key = token.includes("\\") ? (JSON.parse(`"${token}"`) as string) : token;
        if (top.keys!.has(key)) duplicateKey ??= key;
        top.keys!.add(key);
        top.expectKey = false;
      }
      i = end;
      continue;
    }
    if (code === 0x7b /* { */ || code === 0x5b /* [ */) {
      if (stack.length === 0 && code === 0x5b) {
        topArray = true;
        elementStart = i + 1;
      }
      stack.push({ object: code === 0x7b, keys: code === 0x7b ? new Set() : undefined, expectKey: code === 0x7b });
    } else if (code === 0x7d /* } */ || code === 0x5d /* ] */) {
      stack.pop();
      if (topArray && stack.length === 0) {
        const last = text.slice(elementStart, i).trim();
        if (last !== "" || elements.length > 0) elements.push(last);
      }
    } else if (code === COMMA) {
      const top = stack.at(-1)!;
      if (top.object) top.expectKey = true;
      else if (topArray && stack.length === 1) {
        elements.push(text.slice(elementStart, i).trim());
        elementStart = i + 1;
      }
    }
  }
  return { elements: topArray ? elements : undefined, duplicateKey };
}
