/**
 * Control characters shown as \xNN: text from models, upstreams, audit files and policy files
 * reaches an operator's terminal, where an escape sequence must not erase or forge lines.
 */
export function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
