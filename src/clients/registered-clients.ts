import type { Logger } from "pino";
import type { AdminRoute } from "../admin/server.js";
import { SecretStore } from "../credentials/secrets.js";
import type { Scrubber } from "../log/scrub.js";
import type { LoadedPolicy } from "../policy/load.js";
import type { Policy, Rule, SecretSource } from "../policy/schema.js";
import { clientRoutes } from "./admin-routes.js";
import { ClientConnections } from "./connections.js";
import { openClientStore } from "./open-store.js";
import { ClientRegistry } from "./registry.js";

const ADMIN_TOKEN = "admin.token";

/** What the policy state asks of the registry for one client (see PolicyView and PolicyState). */
export interface ClientLookups {
  clientRules(client: string): readonly Rule[] | undefined;
  clientGone(client: string): boolean;
  clientCredentials(client: string): readonly string[] | undefined;
}

/**
 * Sandboxes registered at run time, wired for one process: the registry (and its store), the
 * open tunnels of each client (closed when it is revoked or expires), the lookups the policy
 * decisions use, and the admin routes.
 */
export class RegisteredClients {
  readonly connections = new ClientConnections();
  private tokenStore: { source: SecretSource; store: SecretStore } | undefined;

  private constructor(
    readonly registry: ClientRegistry,
    private readonly scrubber: Scrubber,
    private readonly diagnostics: Logger,
  ) {
    registry.on("removed", (name, reason) => {
      const closed = this.connections.closeAll(name);
      diagnostics.info({ client: name, reason, closed_connections: closed }, `registered client ${reason}`);
    });
  }

  /** Only when admin.token is set: without it there is no registry and no API. */
  static async open(loaded: LoadedPolicy, scrubber: Scrubber, diagnostics: Logger): Promise<RegisteredClients | undefined> {
    if (!loaded.policy.admin.token) return undefined;
    const registry = new ClientRegistry(await openClientStore(loaded), scrubber);
    await registry.start();
    diagnostics.info({ state: registry.store.description, clients: registry.list().length }, "client registry ready (/v1/clients)");
    return new RegisteredClients(registry, scrubber, diagnostics);
  }

  /** The lookups for a policy state built from this policy (its own clients are not registered ones). */
  lookups(policy: Policy): ClientLookups {
    const fileClients = new Set(policy.clients.map((client) => client.name));
    const registry = this.registry;
    this.revokeShadowed(fileClients);
    return {
      clientRules: (client) => (fileClients.has(client) ? undefined : registry.rulesOf(client)),
      // Every identity that is not the file's came from the registry: gone from it means revoked or expired.
      clientGone: (client) => !fileClients.has(client) && !registry.has(client),
      clientCredentials: (client) => (fileClients.has(client) ? undefined : (registry.get(client)?.credentials ?? [])),
    };
  }

  /**
   * A registration whose name the policy (a reload, or another replica's policy) now gives to a
   * file client is revoked: otherwise its token would be taken for that client's identity, with
   * its rules and credentials. Until the revocation lands, Identities refuses such a token.
   */
  private revokeShadowed(fileClients: ReadonlySet<string>): void {
    for (const client of this.registry.list()) {
      if (!fileClients.has(client.name)) continue;
      this.diagnostics.warn({ client: client.name }, "registered client revoked: the policy now defines a client of the same name");
      void this.registry.revoke(client.name).catch(() => undefined);
    }
  }

  routes(currentPolicy: () => Policy): AdminRoute[] {
    return clientRoutes({ registry: this.registry, policy: currentPolicy, adminToken: () => this.adminToken(currentPolicy()) });
  }

  close(): Promise<void> {
    return this.registry.close();
  }

  /** The token of the policy now running (a reload may change its source). */
  private adminToken(policy: Policy): Promise<string> {
    const source = policy.admin.token;
    if (!source) return Promise.reject(new Error("admin.token is not set"));
    if (this.tokenStore?.source !== source) this.tokenStore = { source, store: new SecretStore({ [ADMIN_TOKEN]: source }, this.scrubber) };
    return this.tokenStore.store.resolve(ADMIN_TOKEN);
  }
}
