import { REDACTED } from "../core/audit-record.js";
import { escapeRegExp, mixedEncodingPattern, secretForms } from "./secret-forms.js";


/** Secret values shorter than this are not scrubbed from free text: they would shred ordinary words. */
const MIN_SCRUB_LENGTH = 4;

/**
 * The last line of defence: every resolved secret value is replaced by [REDACTED] in
 * anything portcullis writes (audit lines, diagnostics, error bodies), whatever field it hid in.
 */
export class Scrubber {
  private readonly values = new Set<string>();
  private readonly raw = new Set<string>();
  private pattern: RegExp | undefined;
  private mixed: RegExp | undefined;
  private readonly extra: ((text: string) => string)[] = [];

  add(value: string): void {
    if (value.length < MIN_SCRUB_LENGTH || this.values.has(value)) return;
    // A value is also looked for in the forms it takes once serialised, URL-encoded or base64-encoded.
    for (const form of secretForms(value)) this.values.add(form);
    this.raw.add(value);
    this.pattern = undefined;
    this.mixed = undefined;
  }

  get size(): number {
    return this.values.size;
  }

  /**
   * Adds a scrubber for secrets found by shape rather than by value (registered clients'
   * tokens: thousands of them, known by digest), run after the known values are replaced.
   */
  use(scrub: (text: string) => string): void {
    this.extra.push(scrub);
  }

  /** Bound, so it can be handed around as a plain function. */
  readonly scrub = (text: string): string => {
    let scrubbed = this.scrubValues(text);
    for (const scrub of this.extra) scrubbed = scrub(scrubbed);
    return scrubbed;
  };

  private scrubValues(text: string): string {
    if (this.values.size === 0) return text;
    this.pattern ??= new RegExp(
      [...this.values]
        .sort((a, b) => b.length - a.length)
        .map(escapeRegExp)
        .join("|"),
      "g",
    );
    const scrubbed = text.replace(this.pattern, REDACTED);
    // Any mix of percent-encoded (or \u-escaped, "+", or HTML character references) and plain
    // bytes of each value; only a line with an escape in it can hold one, so most lines skip the
    // costlier pattern.
    if (!/[%\\+]|&(?:#|[a-z]+;)/i.test(scrubbed)) return scrubbed;
    this.mixed ??= new RegExp([...this.raw].map(mixedEncodingPattern).join("|"), "g");
    return scrubbed.replace(this.mixed, REDACTED);
  }
}
