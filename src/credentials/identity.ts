import { createHash, timingSafeEqual } from "node:crypto";
import type { SecretResolver } from "../core/messages.js";
import type { ClientIdentity } from "../policy/schema.js";

export type Authentication = { ok: true; client: string | null } | { ok: false; reason: string };

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Equal-length digests compared in constant time: neither the token nor its length leaks through timing. */
function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** Clients registered at run time (the /v1/clients API), checked after the file's own. */
export interface RegisteredIdentities {
  /** Basic name:token; undefined when no registered client has that name. */
  checkBasic(name: string, token: string): boolean | undefined;
  /** Bearer token: the registered client it belongs to. */
  checkBearer(token: string): string | undefined;
}

export function tokenSecretName(client: string): string {
  return `client-token.${client}`;
}

/**
 * Sandbox identities from Proxy-Authorization: `Basic base64(name:token)` or `Bearer token`.
 * With no clients in the policy nobody authenticates and every request is anonymous.
 */
export class Identities {
  constructor(
    private readonly clients: readonly ClientIdentity[],
    private readonly tokens: SecretResolver,
    private readonly registered?: RegisteredIdentities,
  ) {}

  /** With a client registry (admin.token) every sandbox identifies itself, even before any is registered. */
  get required(): boolean {
    return this.clients.length > 0 || this.registered !== undefined;
  }

  async authenticate(header: string | undefined): Promise<Authentication> {
    if (!this.required) return { ok: true, client: null };
    if (!header) return { ok: false, reason: "Proxy-Authorization is required" };
    const [scheme, ...rest] = header.trim().split(/\s+/);
    const credential = rest.join(" ");
    if (/^basic$/i.test(scheme ?? "")) {
      const decoded = Buffer.from(credential, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) return { ok: false, reason: "malformed Basic credentials" };
      const name = decoded.slice(0, colon);
      const token = decoded.slice(colon + 1);
      const client = this.clients.find((candidate) => candidate.name === name);
      if (!client && this.registered) {
        const ok = this.registered.checkBasic(name, token);
        if (ok !== undefined || this.clients.length === 0) return ok ? { ok: true, client: name } : { ok: false, reason: "unknown client or wrong token" };
      }
      // Unknown names cost a token resolution and a comparison too, so they look like wrong tokens.
      const expected = await this.tokenOf((client ?? this.clients[0]!).name);
      const ok = sameSecret(token, expected ?? `\u0000${token}`) && expected !== undefined && client !== undefined;
      return ok ? { ok: true, client: name } : { ok: false, reason: "unknown client or wrong token" };
    }
    if (/^bearer$/i.test(scheme ?? "")) {
      let match: string | null = null;
      for (const client of this.clients) {
        const expected = await this.tokenOf(client.name);
        if (expected !== undefined && sameSecret(credential, expected) && match === null) match = client.name;
      }
      // A registration whose name the file now also defines is not that file client: refused (and revoked, see RegisteredClients).
      const registered = match === null ? this.registered?.checkBearer(credential) : undefined;
      if (registered !== undefined && !this.clients.some((client) => client.name === registered)) match = registered;
      return match ? { ok: true, client: match } : { ok: false, reason: "unknown token" };
    }
    // The header is never quoted back: a token sent without a scheme would land in the audit log.
    return { ok: false, reason: "unsupported Proxy-Authorization scheme (use Basic or Bearer)" };
  }

  /** Resolves every client token once (start-up, reload), so the scrubber knows them all before any is used. */
  async warmUp(): Promise<void> {
    await Promise.all(this.clients.map((client) => this.tokenOf(client.name)));
  }

  private async tokenOf(name: string): Promise<string | undefined> {
    try {
      return await this.tokens.resolve(tokenSecretName(name));
    } catch {
      return undefined;
    }
  }
}
