import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { Scrubber } from "../log/scrub.js";
import type { SecretSource } from "../policy/schema.js";

/** How long a resolved value is used before it is resolved again, when the policy gives no ttl. */
const DEFAULT_TTL_MS = { env: 0, file: 30_000, command: 300_000 } as const;
/** A refresh starts this far into a value's life, so requests rarely wait for one. */
const REFRESH_AT = 0.8;
const COMMAND_TIMEOUT_MS = 10_000;

export class SecretUnavailable extends Error {
  constructor(
    readonly secret: string,
    reason: string,
  ) {
    super(`secret "${secret}" is unavailable: ${reason}`);
    this.name = "SecretUnavailable";
  }
}

interface Cached {
  value: string;
  resolvedAt: number;
  expiresAt: number;
}

function describeSource(source: SecretSource): string {
  if (source.env !== undefined) return `env ${source.env}`;
  if (source.file !== undefined) return `file ${source.file}`;
  return "command";
}

/** Reads a value from its source. Error messages name the source, never a value or command output. */
async function readSource(name: string, source: SecretSource): Promise<string> {
  if (source.env !== undefined) {
    const value = process.env[source.env];
    if (value === undefined || value === "") throw new SecretUnavailable(name, `environment variable ${source.env} is not set`);
    return value;
  }
  if (source.file !== undefined) {
    let text: string;
    try {
      text = await readFile(source.file, "utf8");
    } catch (error) {
      throw new SecretUnavailable(name, `cannot read ${source.file} (${(error as NodeJS.ErrnoException).code ?? "error"})`);
    }
    const value = text.replace(/\r?\n$/, "");
    if (value === "") throw new SecretUnavailable(name, `${source.file} is empty`);
    return value;
  }
  return new Promise((resolve, reject) => {
    execFile("/bin/sh", ["-c", source.command!], { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 1024 * 1024, windowsHide: true }, (error, stdout) => {
      if (error) {
        const why = error.killed ? `timed out after ${COMMAND_TIMEOUT_MS / 1000}s` : `exited with ${error.code ?? error.signal ?? "an error"}`;
        reject(new SecretUnavailable(name, `command ${why}`));
        return;
      }
      const value = stdout.replace(/\r?\n$/, "");
      if (value === "") reject(new SecretUnavailable(name, "command printed nothing"));
      else resolve(value);
    });
  });
}

/**
 * Named secrets, resolved on demand and cached for their ttl. Concurrent resolutions of one
 * secret share one read; a value is refreshed before it expires; a failed refresh keeps
 * serving the last good value until it expires. Every value is handed to the scrubber the
 * moment it is known.
 */
export class SecretStore {
  private readonly cache = new Map<string, Cached>();
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(
    private readonly sources: Readonly<Record<string, SecretSource>>,
    private readonly scrubber: Scrubber,
    private readonly now: () => number = Date.now,
  ) {}

  names(): string[] {
    return Object.keys(this.sources);
  }

  describe(name: string): string {
    const source = this.sources[name];
    return source ? describeSource(source) : "undefined";
  }

  async resolve(name: string): Promise<string> {
    const source = this.sources[name];
    if (!source) throw new SecretUnavailable(name, "not defined in the policy");
    const cached = this.cache.get(name);
    const now = this.now();
    if (cached && now < cached.expiresAt) {
      if (now >= cached.resolvedAt + (cached.expiresAt - cached.resolvedAt) * REFRESH_AT) void this.refresh(name, source).catch(() => undefined);
      return cached.value;
    }
    return this.refresh(name, source);
  }

  private refresh(name: string, source: SecretSource): Promise<string> {
    let pending = this.inFlight.get(name);
    if (pending) return pending;
    pending = readSource(name, source)
      .then((value) => {
        this.scrubber.add(value);
        const ttl = source.ttl ?? DEFAULT_TTL_MS[source.env !== undefined ? "env" : source.file !== undefined ? "file" : "command"];
        const resolvedAt = this.now();
        this.cache.set(name, { value, resolvedAt, expiresAt: resolvedAt + ttl });
        return value;
      })
      .finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, pending);
    return pending;
  }

  /** Resolves every secret once (start-up and reload); returns the failures, which are warnings, not fatal. */
  async warmUp(): Promise<SecretUnavailable[]> {
    const results = await Promise.allSettled(this.names().map((name) => this.resolve(name)));
    return results.flatMap((result) => (result.status === "rejected" ? [result.reason as SecretUnavailable] : []));
  }
}
