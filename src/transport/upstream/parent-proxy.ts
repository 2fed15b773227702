import { ProxyError } from "../../core/errors.js";
import { SecretStore, SecretUnavailable } from "../../credentials/secrets.js";
import type { Scrubber } from "../../log/scrub.js";
import { NoProxy } from "../../policy/parent-proxy.js";
import { normaliseHost } from "../../policy/hosts.js";
import type { ParentProxyPolicy } from "../../policy/schema.js";
import { formatAuthority } from "../../pipeline/target.js";

const PASSWORD = "upstream.proxy.password";

/**
 * The parent (corporate) proxy of `upstream.proxy`, and which destinations bypass it
 * (`upstream.no_proxy`). Its password, written in the URL or read from a secret source, is
 * registered with the scrubber like any secret; its name in messages is HOST:PORT only.
 */
export class ParentProxy {
  readonly host: string;
  readonly port: number;
  /** HOST:PORT */
  readonly authority: string;
  /** "parent proxy HOST:PORT": how every message names it. */
  readonly name: string;
  private readonly username: string;
  private readonly literalPassword: string | undefined;
  private readonly secrets: SecretStore | undefined;
  private readonly noProxy: NoProxy;
  private readonly overrides: Map<string, string>;

  constructor(config: ParentProxyPolicy, noProxy: readonly string[], resolve: Record<string, string>, private readonly scrubber: Scrubber) {
    const password = typeof config === "string" ? undefined : config.password;
    this.host = config.host;
    this.port = config.port;
    this.authority = formatAuthority(config.host, config.port);
    this.name = `parent proxy ${this.authority}`;
    this.username = config.username ?? "";
    if (typeof password === "string" || password === undefined) {
      this.literalPassword = password;
      if (password) scrubber.add(password);
    } else {
      this.secrets = new SecretStore({ [PASSWORD]: password }, scrubber);
    }
    this.noProxy = new NoProxy(noProxy);
    this.overrides = new Map(Object.entries(resolve).map(([name, address]) => [normaliseHost(name), address]));
  }

  /** Whether a connection to `host` goes through the parent (false: no_proxy lists it). */
  carries(host: string): boolean {
    const name = normaliseHost(host);
    return !this.noProxy.bypasses(name, this.overrides.get(name));
  }

  /**
   * What the parent is asked to connect to: the address an upstream.resolve override gives the
   * name (the parent must reach what portcullis' guard judged), else the name itself.
   */
  destinationHost(host: string): string {
    return this.overrides.get(normaliseHost(host)) ?? host;
  }

  /** The Proxy-Authorization value (Basic, RFC 7617), or undefined without credentials. */
  async authorization(): Promise<string | undefined> {
    let password = this.literalPassword;
    if (this.secrets) {
      try {
        password = await this.secrets.resolve(PASSWORD);
      } catch (error) {
        const why = error instanceof SecretUnavailable ? error.message : "its password cannot be read";
        throw new ProxyError("upstream_unreachable", `cannot authenticate to the ${this.name}: ${why}`);
      }
    }
    if (password === undefined && this.username === "") return undefined;
    const token = Buffer.from(`${this.username}:${password ?? ""}`).toString("base64");
    this.scrubber.add(token);
    return `Basic ${token}`;
  }

  /** Reads a password kept in a secret source once (start and reload), so a broken one is reported at once. */
  async warmUp(): Promise<SecretUnavailable[]> {
    return this.secrets ? this.secrets.warmUp() : [];
  }
}
