import type { AddressInfo, Socket } from "node:net";
import type { DestinationStream, Logger } from "pino";
import { CA_CERT_FILE, caExists, initCa, loadCa } from "../ca/authority.js";
import { join } from "node:path";
import { SecureContextStore } from "../ca/secure-contexts.js";
import { createDiagnostics, AuditLog } from "../log/loggers.js";
import { Scrubber } from "../log/scrub.js";
import ipaddr from "ipaddr.js";
import { SecretStore } from "../credentials/secrets.js";
import { awsSecretSources } from "../credentials/sigv4/sources.js";
import { secretStoreOptions } from "./secret-store-options.js";
import { DestinationGuard, type SelfAddress } from "../policy/destinations.js";
import { Identities, tokenSecretName } from "../credentials/identity.js";
import { stringify as stringifyYaml } from "yaml";
import { listenError } from "./listen-error.js";
import { restartOnlyChanges } from "./reload-changes.js";
import { formatPolicyError, loadPolicyFile, parsePolicy, PolicyInvalidError, resolveFrom, type LoadedPolicy } from "../policy/load.js";
import type { PolicyInput } from "../policy/schema.js";
import type { Hook, Hooks, RequestContext, ResponseContext } from "../pipeline/hooks.js";
import type { Registry } from "prom-client";
import { ProxyMetrics } from "../admin/metrics.js";
import { createAdminServer, listenAdmin } from "../admin/server.js";
import { budgetsRoute } from "../admin/budgets-route.js";
import { BudgetStores, storeRole } from "../budgets/open-store.js";
import type { PolicyState } from "../pipeline/context.js";
import { formatAuthority, parseAuthority } from "../pipeline/target.js";
import { createServers, type ProxyServers } from "../transport/listener.js";
import type { ClientTimeouts, TransportRuntime } from "../transport/runtime.js";
import { createLookup } from "../transport/upstream/lookup.js";
import { ParentProxy } from "../transport/upstream/parent-proxy.js";
import { UpstreamPool } from "../transport/upstream/pool.js";
import { buildUpstreamTrust } from "../transport/upstream/trust.js";
import { AdminToken, startObservability } from "./observability.js";
import { warmUpParentProxy } from "./parent-proxy-startup.js";
import { followAdminPort } from "./admin-port.js";
import { RegisteredClients } from "../clients/registered-clients.js";

export interface ProxyOptions {
  /** A loaded policy, a policy file's path, or the policy as an object (validated like a file). */
  policy: LoadedPolicy | string | PolicyInput;
  /** Hooks that run in the pipeline at their stage (more can be added with proxy.onRequest etc.). */
  hooks?: Hooks;
  /** Overrides proxy.listen. */
  listen?: string;
  /** Where audit lines go instead of log.audit (tests, embedding). */
  auditStream?: DestinationStream;
  diagnosticsStream?: DestinationStream;
  timeouts?: Partial<ClientTimeouts>;
  /** Overrides admin.listen; null turns the admin listener off. */
  adminListen?: string | null;
  /** A prom-client registry to register metrics in (cluster workers use one the primary aggregates). */
  metricsRegistry?: Registry;
  /**
   * Told when the audit log stops taking writes (why, and whether only a restart can end it) and
   * when it takes them again (undefined): a cluster worker tells its primary.
   */
  onAuditHealth?(failure: string | undefined, lasting: boolean): void;
}

export interface Proxy {
  /** Starts listening; resolves with the bound address. */
  listen(): Promise<AddressInfo>;
  /** Stops accepting, lets in-flight requests finish for up to graceMs, then cuts what is left. */
  close(options?: { graceMs?: number }): Promise<void>;
  /** Swaps the policy for new tunnels and requests; in-flight ones finish on the old one. */
  reload(policy: LoadedPolicy): Promise<void>;
  /** Loads, validates and swaps in a policy file; an invalid one is logged and counted, and the running policy kept. */
  reloadFromFile(file: string, trigger: string): Promise<boolean>;
  /** Reopens the audit file (logrotate). */
  reopenLogs(): void;
  readonly address: AddressInfo | undefined;
  readonly adminAddress: AddressInfo | undefined;
  readonly metrics: ProxyMetrics;
  readonly caCertPem: string;
  readonly diagnostics: Logger;
  readonly certificateStats: SecureContextStore["stats"];
  /** Runs after the policy allowed a request, before secrets are put on it: may change path and headers, or deny. */
  onRequest(hook: Hook<RequestContext>): Proxy;
  /** Runs when the upstream's response headers arrive: may change status and headers. */
  onResponse(hook: Hook<ResponseContext>): Proxy;
  /** Runs on a WebSocket (or other upgrade) handshake the policy allowed: may change path and headers, or deny. */
  onWebSocket(hook: Hook<RequestContext>): Proxy;
}

function isLoadedPolicy(value: ProxyOptions["policy"]): value is LoadedPolicy {
  return typeof value === "object" && value !== null && "policy" in value && "file" in value && "baseDir" in value;
}

async function resolvePolicy(policy: ProxyOptions["policy"]): Promise<LoadedPolicy> {
  if (typeof policy === "string") return loadPolicyFile(policy);
  if (isLoadedPolicy(policy)) return policy;
  return parsePolicy(stringifyYaml(policy), "<object>");
}

export const DEFAULT_TIMEOUTS: ClientTimeouts = { headersMs: 30_000, keepAliveMs: 30_000 };

/**
 * The state a policy runs on, but for its budgets: building it can fail (a trust file gone) and
 * changes nothing outside it, so a reload builds it before it commits to anything.
 */
function buildState(loaded: LoadedPolicy, scrubber: Scrubber, self: SelfAddress, diagnostics: Logger, registered?: RegisteredClients): PolicyState {
  const { policy } = loaded;
  const trust = buildUpstreamTrust(policy.upstream.trust.map((file) => resolveFrom(loaded, file)));
  const guard = new DestinationGuard(policy.network.private_destinations, policy.network.allow_ips, self);
  const tokenSources = Object.fromEntries(policy.clients.map((client) => [tokenSecretName(client.name), client.token]));
  const lookup = createLookup(policy.upstream.resolve, guard);
  const upstream = new UpstreamPool(
    lookup,
    trust,
    { connectMs: policy.upstream.connect_timeout, responseMs: policy.upstream.response_timeout, guard },
    policy.upstream.proxy && new ParentProxy(policy.upstream.proxy, policy.upstream.no_proxy, policy.upstream.resolve, scrubber),
  );
  const secretOptions = secretStoreOptions(policy, trust, lookup, diagnostics, upstream.connector);
  return {
    policy,
    upstream,
    passthrough: policy.passthrough.hosts,
    secrets: new SecretStore({ ...policy.secrets, ...awsSecretSources(policy.credentials) }, scrubber, secretOptions),
    identities: new Identities(policy.clients, new SecretStore(tokenSources, scrubber, secretOptions), registered?.registry),
    guard,
    ...registered?.lookups(policy),
  };
}

/** The state with the policy's budgets: this switches the budget store the process shares across reloads (the commit). */
function withBudgets(state: PolicyState, loaded: LoadedPolicy, budgetStores: BudgetStores): PolicyState {
  const { budgets } = loaded.policy;
  const ledger = budgetStores.ledgerFor({ section: budgets, stateFile: budgets.state_file && resolveFrom(loaded, budgets.state_file) });
  return ledger ? { ...state, budgets: ledger } : state;
}

function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  return ipaddr.isValid(host) && ipaddr.process(host).range() === "loopback";
}

/** Without clients nobody authenticates: that is only safe where only this machine can connect. */
export function assertNotOpenProxy(loaded: LoadedPolicy, listen: string): void {
  const { host } = parseListen(listen);
  // admin.token makes every sandbox authenticate (as a registered client), so it is not open either.
  if (loaded.policy.clients.length === 0 && !loaded.policy.admin.token && !isLoopback(host)) {
    throw new Error(
      `refusing to listen on ${listen} without proxy authentication: anyone who can reach it could use it as an open proxy. ` +
        "Add clients to the policy, or listen on a loopback address (127.0.0.1:PORT).",
    );
  }
}

/** Resolves every secret once so a broken one is reported at once; a failure is a warning, never fatal. */
async function warmUpSecrets(state: PolicyState, diagnostics: Logger): Promise<void> {
  await state.identities.warmUp();
  for (const failure of await state.secrets.warmUp()) {
    diagnostics.warn({ secret: failure.secret }, `${failure.message}; requests that need it will get 502 credential_unavailable`);
  }
  await warmUpParentProxy(state, diagnostics);
}

/** The registry is opened at start: turning it on or off, or moving it, takes a restart. */
function warnIfRegistryChanged(started: LoadedPolicy, next: LoadedPolicy, diagnostics: Logger): void {
  const before = started.policy.admin;
  const after = next.policy.admin;
  if ((before.token === undefined) !== (after.token === undefined) || before.state !== after.state) {
    diagnostics.warn({ state: before.state }, "admin.token or admin.state changed: the client registry needs a restart to follow; it keeps running as it started");
  }
}

export function parseListen(text: string): { host: string; port: number } {
  const authority = parseAuthority(text, { allowPortZero: true });
  if (!authority || authority.port === undefined) throw new Error(`listen address must be HOST:PORT, got "${text}"`);
  return { host: authority.host, port: authority.port };
}

export async function createProxy(options: ProxyOptions): Promise<Proxy> {
  const loaded = await resolvePolicy(options.policy);
  const scrubber = new Scrubber();
  const diagnostics = createDiagnostics(loaded.policy.log.level, scrubber, options.diagnosticsStream);
  const caDir = resolveFrom(loaded, loaded.policy.ca.dir);
  if (!(await caExists(caDir))) {
    await initCa(caDir);
    diagnostics.info({ dir: caDir }, "created a new CA; sandboxes must trust ca.pem");
  }
  diagnostics.info({ ca: join(caDir, CA_CERT_FILE) }, "CA certificate sandboxes must trust (portcullis trust prints how)");
  const contexts = new SecureContextStore(await loadCa(caDir));
  const metrics = new ProxyMetrics(() => contexts.stats, options.metricsRegistry);
  const audit = new AuditLog(
    options.auditStream ? "stream" : loaded.policy.log.audit === "-" ? "-" : resolveFrom(loaded, loaded.policy.log.audit),
    scrubber,
    options.auditStream,
    (record) => metrics.observe(record),
    {
      failed: (message) => {
        diagnostics.error(`${message}; new requests and tunnels are refused until it can be`);
        options.onAuditHealth?.(audit.failure, audit.lasting);
      },
      recovered: (message) => {
        diagnostics.warn(message);
        options.onAuditHealth?.(undefined, false);
      },
      warn: (message) => diagnostics.warn(message),
      dropped: () => metrics.auditLineDropped(),
    },
  );
  metrics.watchAuditLog(() => audit.failure === undefined);
  const listen = options.listen ?? loaded.policy.proxy.listen;
  assertNotOpenProxy(loaded, listen);
  const self: SelfAddress = {};
  followAdminPort(self);
  const budgetStores = new BudgetStores(storeRole(), { warn: (message) => diagnostics.warn(message), info: (message) => diagnostics.info(message) });
  const registered = await RegisteredClients.open(loaded, scrubber, diagnostics);
  const runtime: TransportRuntime = {
    state: withBudgets(buildState(loaded, scrubber, self, diagnostics, registered), loaded, budgetStores),
    contexts,
    audit,
    diagnostics,
    scrubber,
    timeouts: { ...DEFAULT_TIMEOUTS, ...options.timeouts },
    metrics,
    hooks: options.hooks ? [options.hooks] : [],
    clientConnections: registered?.connections,
  };
  const servers = createServers(runtime);
  const { listener } = servers;
  const clientSockets = new Set<Socket>();
  // One listener for every socket: a closure per connection would live as long as the connection.
  const forgetSocket = function (this: Socket): void {
    clientSockets.delete(this);
  };
  listener.on("connection", (socket: Socket) => {
    clientSockets.add(socket);
    socket.on("close", forgetSocket);
  });
  await warmUpSecrets(runtime.state, diagnostics);
  const listenAt = parseListen(listen);
  let address: AddressInfo | undefined;
  let draining = false;
  let policyFile = loaded.file;
  let lastReload: { ok: boolean; at: string; errors?: string[] } | undefined;
  const adminListen = options.adminListen === undefined ? loaded.policy.admin.listen : (options.adminListen ?? undefined);
  const adminToken = new AdminToken(scrubber);
  adminToken.use(loaded.policy);
  const observability = await startObservability({
    policy: loaded.policy,
    feed: audit.feed,
    diagnostics,
    adminToken,
    serveAdmin: adminListen !== undefined,
    adminAddress: () => adminAddress,
    openCounts: () => metrics.openCounts(),
  });
  const admin = adminListen
    ? createAdminServer({
        ready: () => address !== undefined && !draining && audit.failure === undefined,
        broken: () => (audit.lasting ? audit.failure : undefined),
        details: () => ({ ca: true, policy: policyFile, draining, listening: address ? formatAuthority(address.address, address.port) : null, last_reload: lastReload ?? null, audit: audit.failure ?? "ok" }),
        metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      }, [...observability.routes, budgetsRoute(() => runtime.state.budgets, adminToken.value), ...(registered?.routes(() => runtime.state.policy) ?? [])])
    : undefined;
  let adminAddress: AddressInfo | undefined;

  const reload = async (policy: LoadedPolicy) => {
    assertNotOpenProxy(policy, listen);
    // Built first: a policy that cannot be built (a trust file gone, say) changes nothing, the audit log's place included.
    const built = buildState(policy, scrubber, self, diagnostics, registered);
    const restart = restartOnlyChanges(loaded, policy);
    if (restart.length) diagnostics.warn({ settings: restart }, `needs a restart: ${restart.join(", ")} changed; the running value${restart.length > 1 ? "s are" : " is"} kept until then`);
    if (!options.auditStream) {
      const target = policy.policy.log.audit === "-" ? "-" : resolveFrom(policy, policy.policy.log.audit);
      const from = audit.destination;
      if (target !== from) {
        try {
          audit.retarget(target, scrubber);
        } catch (error) {
          // Refused after all (a FIFO with no reader): the pool built for it is given up unused.
          built.upstream.destroy();
          throw error;
        }
        diagnostics.info({ from, to: target }, "audit log now written to the new log.audit");
      }
    }
    warnIfRegistryChanged(loaded, policy, diagnostics);
    // Nothing above refused the policy (the audit log's new place included): now the budget store may switch.
    const next = withBudgets(built, policy, budgetStores);
    next.secrets.rememberFrom(runtime.state.secrets);
    runtime.state = next;
    adminToken.use(policy.policy);
    if (JSON.stringify(policy.policy.telemetry) !== JSON.stringify(loaded.policy.telemetry)) diagnostics.warn("telemetry changes take effect at the next restart");
    policyFile = policy.file;
    await warmUpSecrets(runtime.state, diagnostics);
  };

  const proxy: Proxy = {
    onRequest(hook) {
      runtime.hooks.push({ onRequest: hook });
      return proxy;
    },
    onResponse(hook) {
      runtime.hooks.push({ onResponse: hook });
      return proxy;
    },
    onWebSocket(hook) {
      runtime.hooks.push({ onWebSocket: hook });
      return proxy;
    },
    get address() {
      return address;
    },
    get adminAddress() {
      return adminAddress;
    },
    caCertPem: contexts.caCertPem,
    diagnostics,
    metrics,
    certificateStats: contexts.stats,
    async listen() {
      address = await new Promise<AddressInfo>((resolve, reject) => {
        listener.once("error", (error: NodeJS.ErrnoException) => reject(listenError("proxy", listenAt.host, listenAt.port, error)));
        listener.listen(listenAt.port, listenAt.host, () => {
          listener.off("error", reject);
          resolve(listener.address() as AddressInfo);
        });
      });
      self.host = address.address;
      self.port = address.port;
      if (admin && adminListen) {
        const at = parseListen(adminListen);
        adminAddress = await listenAdmin(admin, at.host, at.port).catch((error: NodeJS.ErrnoException) => {
          listener.close();
          throw listenError("admin", at.host, at.port, error);
        });
        self.adminPort = adminAddress.port;
        if (!isLoopback(at.host) && !runtime.state.policy.admin.token) {
          diagnostics.warn(
            { admin: formatAuthority(adminAddress.address, adminAddress.port) },
            "the admin listener is not on loopback and admin.token is not set: /ui with its live stream of every exchange, and /budgets, answer anyone who can reach it",
          );
        }
      }
      return address;
    },
    reload,
    async reloadFromFile(file, trigger) {
      try {
        await reload(await loadPolicyFile(file));
        lastReload = { ok: true, at: new Date().toISOString() };
        metrics.reloaded(true);
        diagnostics.info({ policy: file, trigger }, "policy reloaded");
        return true;
      } catch (error) {
        const errors = error instanceof PolicyInvalidError ? error.errors.map(formatPolicyError) : [(error as Error).message];
        lastReload = { ok: false, at: new Date().toISOString(), errors };
        metrics.reloaded(false);
        diagnostics.error({ policy: file, trigger, errors }, "policy reload rejected; keeping the running policy");
        return false;
      }
    },
    reopenLogs() {
      audit.reopen();
    },
    async close({ graceMs = 10_000 } = {}) {
      draining = true;
      await drain(servers, clientSockets, graceMs);
      runtime.state.upstream.destroy();
      // What the drain cut still owes its line: written once its sockets' close is seen, a
      // compressed answer's usage once read (bounded: a line that never comes must not hold the exit).
      await audit.owed.settled(AUDIT_SETTLE_MS);
      await budgetStores.close();
      await registered?.close();
      audit.close();
      await observability.close();
      if (admin?.listening) {
        admin.closeAllConnections();
        await new Promise<void>((resolve) => admin.close(() => resolve()));
      }
    },
  };
  return proxy;
}

/** The longest a closing proxy waits for the lines of the exchanges its drain cut. */
const AUDIT_SETTLE_MS = 3_000;

async function drain({ listener, http1, http2 }: ProxyServers, sockets: Set<Socket>, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
  const deadline = Date.now() + graceMs;
  // h2 clients get GOAWAY at once: no new streams, those in flight may finish.
  http2?.closeSessions();
  // Idle keep-alive connections go at once; busy ones as soon as their response is done.
  while (sockets.size > 0 && Date.now() < deadline) {
    listener.closeIdleConnections();
    http1.closeIdleConnections();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const socket of sockets) socket.destroy();
  http1.closeAllConnections();
  http2?.destroySessions();
  await closed;
}
