export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Shorter forms than this are not searched for: they would shred ordinary text. */
const MIN_FORM_LENGTH = 6;

/** Every byte but RFC 3986's unreserved ones percent-encoded, as Python's quote and Go's QueryEscape do. */
function percentEncodeAll(value: string, lower: boolean): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const char = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(char) && byte < 0x80) out += char;
    else out += `%${byte.toString(16).padStart(2, "0")[lower ? "toLowerCase" : "toUpperCase"]()}`;
  }
  return out;
}

/**
 * The base64 characters that stand for the secret whatever bytes come before it (0, 1 or 2
 * bytes of offset, as in base64("Bearer " + secret)): the inner run that does not mix with
 * neighbouring bytes. A few characters at each end stay visible; the secret does not.
 */
function base64Cores(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  const cores: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString("base64");
    // Characters 0-3 carry the offset bytes; the last group may mix with what follows the secret.
    const core = encoded.slice(offset === 0 ? 0 : 4, encoded.length - 4);
    for (const form of [core, core.replace(/\+/g, "-").replace(/\//g, "_")]) cores.push(form);
  }
  return cores;
}

/**
 * The spellings a secret value takes once it travels: as written; JSON-escaped (with and
 * without escaped slashes, and as all-\uXXXX); URL-encoded (encodeURIComponent's and the
 * stricter every-reserved-byte form, both hex cases, "+" for space, and encoded twice); hex;
 * base64 at any byte offset (standard and URL-safe). Whatever scrubs a secret scrubs every one.
 */
export function secretForms(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  const encoded = encodeURIComponent(value);
  const base64 = Buffer.from(value, "utf8").toString("base64");
  const forms = [
    value,
    json,
    json.replace(/\//g, "\\/"),
    [...value].map((char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`).join(""),
    encoded,
    encoded.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()),
    encoded.replace(/%20/g, "+"),
    percentEncodeAll(value, false),
    percentEncodeAll(value, true),
    encodeURIComponent(encoded),
    Buffer.from(value, "utf8").toString("hex"),
    Buffer.from(value, "utf8").toString("hex").toUpperCase(),
    base64,
    base64.replace(/=+$/, ""),
    base64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
    ...base64Cores(value),
  ];
  return [...new Set(forms.filter((form) => form.length >= MIN_FORM_LENGTH || form === value))].sort((a, b) => b.length - a.length);
}

function hexCase(digit: string): string {
  return /[a-f]/i.test(digit) ? `[${digit.toLowerCase()}${digit.toUpperCase()}]` : digit;
}

/**
 * HTML's names for the ASCII characters a secret (base64, a URL, a JWT) holds besides letters
 * and digits, as HTML escapers write them (error pages, templates that echo a request).
 */
const HTML_NAMES: Readonly<Record<string, readonly string[]>> = {
  "&": ["amp"],
  "<": ["lt"],
  ">": ["gt"],
  '"': ["quot"],
  "'": ["apos"],
  "/": ["sol"],
  "+": ["plus"],
  "=": ["equals"],
  ":": ["colon"],
  ".": ["period"],
  "_": ["lowbar"],
};

/** Every prefix of a literal text, as regex sources (the unfinished starts of an HTML name). */
function literalPrefixes(text: string): string[] {
  return Array.from({ length: text.length }, (_, i) => escapeRegExp(text.slice(0, i + 1)));
}

/**
 * One byte as every decoder reads it: itself, %XX (either case, or %25XX encoded twice),
 * \u00XX, "+" for a space, and for ASCII an HTML character reference (&#47;, &#x2F;, &sol;).
 */
function byteAlternatives(byte: number): string[] {
  const hex = byte.toString(16).padStart(2, "0");
  const flexible = `${hexCase(hex[0]!)}${hexCase(hex[1]!)}`;
  const alternatives = [escapeRegExp(String.fromCharCode(byte)), `%${flexible}`, `%25${flexible}`];
  if (byte < 0x80) {
    // Up to four leading zeros: a bound keeps every spelling within what the streaming scrubber holds back.
    alternatives.push(`\\\\u00${flexible}`, `&#0{0,4}${byte};`, `&#[xX]0{0,4}${[...byte.toString(16)].map(hexCase).join("")};`);
    for (const name of HTML_NAMES[String.fromCharCode(byte)] ?? []) alternatives.push(escapeRegExp(`&${name};`));
  }
  if (byte === 0x20) alternatives.push("\\+");
  return alternatives;
}

/** The unfinished starts of a byte's spellings ("%", "%2", "%25", "%255", "\", "\u", "&#", "&#x2", ...). */
function bytePartials(byte: number): string[] {
  const hex = byte.toString(16).padStart(2, "0");
  const flexible = [hexCase(hex[0]!), hexCase(hex[1]!)];
  const partials = ["%", `%${flexible[0]}`, "%2", "%25", `%25${flexible[0]}`];
  if (byte < 0x80) {
    partials.push("\\\\", "\\\\u", "\\\\u0", "\\\\u00", `\\\\u00${flexible[0]}`);
    const decimal = String(byte);
    const shortHex = [...byte.toString(16)].map(hexCase);
    partials.push("&", "&#0{0,4}", "&#[xX]0{0,4}");
    for (let i = 1; i <= decimal.length; i++) partials.push(`&#0{0,4}${decimal.slice(0, i)}`);
    for (let i = 1; i <= shortHex.length; i++) partials.push(`&#[xX]0{0,4}${shortHex.slice(0, i).join("")}`);
    for (const name of HTML_NAMES[String.fromCharCode(byte)] ?? []) partials.push(...literalPrefixes(`&${name}`));
  }
  return [...new Set(partials)];
}

/**
 * A regex source matching the value's UTF-8 bytes (seen as latin1) with any subset of them
 * percent-encoded (either hex case, or twice), JSON-\u-escaped or "+" for space: every mix a
 * decoder would still read as the value, which no list of spellings can enumerate.
 */
export function mixedEncodingPattern(value: string): string {
  return [...Buffer.from(value, "utf8")].map((byte) => `(?:${byteAlternatives(byte).join("|")})`).join("");
}

/** A regex source, anchored at the end, matching any unfinished start of mixedEncodingPattern(value). */
export function mixedEncodingPrefixPattern(value: string): string {
  const bytes = [...Buffer.from(value, "utf8")];
  let inner = "";
  for (let i = bytes.length - 1; i >= 0; i--) {
    const whole = `(?:${byteAlternatives(bytes[i]!).join("|")})`;
    const partial = `(?:${bytePartials(bytes[i]!).join("|")})`;
    // Either this byte is unfinished, or it is whole and (if not the last) more may follow.
    inner = i === bytes.length - 1 ? partial : `(?:${whole}${inner ? `(?:${inner})?` : ""}|${partial})`;
  }
  return `(?:${inner})$`;
}
