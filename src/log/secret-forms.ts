/**
 * The spellings a secret value takes once it travels: as written, JSON-escaped, URL-encoded
 * (both hex cases, and with "+" for spaces as in forms), and base64 (standard and URL-safe,
 * as in Basic auth). Whatever scrubs a secret scrubs every one of them.
 */
export function secretForms(value: string): string[] {
  const encoded = encodeURIComponent(value);
  const base64 = Buffer.from(value, "utf8").toString("base64");
  const forms = [
    value,
    JSON.stringify(value).slice(1, -1),
    encoded,
    encoded.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()),
    encoded.replace(/%20/g, "+"),
    base64,
    base64.replace(/=+$/, ""),
    base64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  ];
  return [...new Set(forms.filter((form) => form.length > 0))].sort((a, b) => b.length - a.length);
}
