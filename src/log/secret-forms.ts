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
