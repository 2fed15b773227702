import cluster, { type Worker } from "node:cluster";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { AggregatorRegistry, type Registry } from "prom-client";
import { createAdminServer, listenAdmin } from "../admin/server.js";
import { budgetsRoute } from "../admin/budgets-route.js";
import { serveBudgetsTo } from "../budgets/ipc-store.js";
import { MemoryBudgetStore } from "../budgets/memory-store.js";
import { BudgetStores } from "../budgets/open-store.js";
import { caExists, initCa, loadCa } from "../ca/authority.js";
import { loadPolicyFile, resolveFrom, type LoadedPolicy } from "../policy/load.js";
import { watchFile } from "../policy/watch.js";
import { RegisteredClients } from "../clients/registered-clients.js";
import { createDiagnostics } from "../log/loggers.js";
import { Scrubber } from "../log/scrub.js";
import { adminPortEnvironment, tellAdminPort } from "./admin-port.js";
import { parseListen } from "./create-proxy.js";
import { listenError } from "./listen-error.js";
import { formatAuthority } from "../pipeline/target.js";
import { LiveView } from "../admin/live-view.js";
import { AdminToken, liveRoutes, openCountsFromText, workerRecord } from "./observability.js";

const LISTENING = "portcullis:listening";
const AUDIT_HEALTH = "portcullis:audit-health";
/** Consecutive worker exits, before any worker ever listened, after which the primary gives up. */
const MAX_FAILURES_BEFORE_LISTENING = 5;

/** The CPUs a cgroup (container) CPU limit grants, if one is set: cgroup v2, then v1. */
export function cgroupCpuLimit(read: (file: string) => string = (file) => readFileSync(file, "utf8")): number | undefined {
  const quota = (text: string, period: string) => {
    const q = Number(text);
    const p = Number(period);
    return Number.isFinite(q) && q > 0 && p > 0 ? Math.max(1, Math.ceil(q / p)) : undefined;
  };
  try {
    const [limit, period] = read("/sys/fs/cgroup/cpu.max").trim().split(/\s+/);
    return limit === "max" ? undefined : quota(limit ?? "", period ?? "");
  } catch {
    try {
      return quota(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").trim(), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").trim());
    } catch {
      return undefined;
    }
  }
}

export function parseWorkers(spec: string): number {
  // availableParallelism() counts the machine's cores, not a container's CPU limit.
  if (spec === "auto") return Math.min(availableParallelism(), cgroupCpuLimit() ?? Number.POSITIVE_INFINITY);
  const count = Number(spec);
  if (!Number.isInteger(count) || count < 1 || count > 256) throw new Error(`--workers expects a whole number from 1 to 256 or "auto", got "${spec}"`);
  return count;
}

/** Worker side: tell the primary where this worker listens, and let it aggregate this worker's metrics. */
export function reportToPrimary(address: AddressInfo, registry: Registry): void {
  // Constructing an AggregatorRegistry is what makes prom-client answer the primary's metric requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  process.send?.({ type: LISTENING, address: address.address, port: address.port });
}

/** Worker side: the primary's /readyz reports a worker whose audit log cannot be written (`failure`), until it can (undefined). */
export function reportAuditHealth(failure: string | undefined, lasting: boolean): void {
  process.send?.({ type: AUDIT_HEALTH, failure, lasting });
}

function write(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * The primary of `start --workers N`: creates the CA once, forks N workers that share the
 * listening port (node:cluster), relays SIGHUP/SIGUSR2 to every worker, replaces a worker
 * that dies, serves the admin endpoints with the workers' metrics summed, and on
 * SIGTERM/SIGINT drains every worker before it exits 0.
 */
export async function runPrimary(count: number, loaded: LoadedPolicy): Promise<number> {
  // Workers keep their own view of the registry: only a store they can all read can give them one.
  if (loaded.policy.admin.token && loaded.policy.admin.state === "memory") {
    throw new Error(
      "--workers with admin.token needs a shared client registry: admin.state memory is per process. Set admin.state to a file path or redis://HOST:PORT",
    );
  }
  const scrubber = new Scrubber();
  // The primary serves /v1/clients and writes the store; each worker follows it (file watch, Redis pub/sub).
  const registered = await RegisteredClients.open(loaded, scrubber, createDiagnostics(loaded.policy.log.level, scrubber));
  let current = loaded;
  const caDir = resolveFrom(loaded, loaded.policy.ca.dir);
  if (!(await caExists(caDir))) await initCa(caDir);
  await loadCa(caDir); // creates the shared leaf key before any worker races for it
  const listening = new Map<Worker, string>();
  /** Workers whose audit log cannot be written, and why: the cluster is not ready while any is (and not healthy while any cannot recover by itself). */
  const auditFailures = new Map<Worker, { reason: string; lasting: boolean }>();
  let stopping = false;
  let announced = false;
  let failures = 0;
  let giveUp: () => void = () => undefined;
  const aggregator = new AggregatorRegistry();
  // The memory store's counters live here, so every worker charges and checks the same ones.
  const budgetStores = new BudgetStores("primary", { warn: (line) => write(`portcullis: ${line}`), info: (line) => write(`portcullis: ${line}`) });
  const { budgets } = loaded.policy;
  const ledger = budgetStores.ledgerFor({ section: budgets, stateFile: budgets.state_file && resolveFrom(loaded, budgets.state_file) });
  // Served even when the policy starts without budget rules: a reload may add some.
  const sharedCounters =
    budgets.store !== "memory" ? undefined : ledger?.store instanceof MemoryBudgetStore ? ledger.store : new MemoryBudgetStore();
  const adminListen = loaded.policy.admin.listen;
  // Workers send their (scrubbed) audit records here, so /ui shows every worker's traffic.
  const live = new LiveView({ openCounts: async () => openCountsFromText(await aggregator.clusterMetrics()) });
  const adminToken = new AdminToken(new Scrubber());
  adminToken.use(loaded.policy);
  let adminAddress: AddressInfo | undefined;
  const admin = adminListen
    ? createAdminServer({
        ready: () => !stopping && listening.size === count && auditFailures.size === 0,
        broken: () => [...auditFailures.values()].find((failure) => failure.lasting)?.reason,
        details: () => ({ ca: true, policy: loaded.file, workers: count, workers_listening: listening.size, draining: stopping, audit: auditFailures.values().next().value?.reason ?? "ok" }),
        metrics: async () => ({ contentType: aggregator.contentType, body: await (await aggregator.clusterMetrics()).toString() }),
      }, [...liveRoutes(live, adminToken, () => adminAddress), budgetsRoute(() => ledger, adminToken.value), ...(registered?.routes(() => current.policy) ?? [])])
    : undefined;

  const fixedAdminPort = adminListen ? parseListen(adminListen).port || undefined : undefined;
  const fork = () => {
    const worker = cluster.fork({ PORTCULLIS_WORKER: "1", ...adminPortEnvironment(fixedAdminPort) });
    worker.once("online", () => adminAddress && tellAdminPort(worker, adminAddress.port));
    worker.on("message", (message: unknown) => {
      const record = workerRecord(message);
      if (record) live.add(record);
    });
    if (sharedCounters) serveBudgetsTo(worker, sharedCounters);
    worker.on("message", (message: { type?: string; address?: string; port?: number }) => {
      if (message?.type !== LISTENING) return;
      listening.set(worker, formatAuthority(message.address!, message.port!));
      if (!announced && listening.size === count) {
        announced = true;
        write(`portcullis listening on ${listening.get(worker)} (${count} workers)`);
        void startAdmin();
      }
    });
    worker.on("exit", (code, signal) => {
      listening.delete(worker);
      auditFailures.delete(worker);
      if (stopping) return;
      failures++;
      // Workers that never managed to listen will not do better on the next try (a port in use,
      // a bad certificate directory): give up rather than loop.
      if (!announced && failures >= MAX_FAILURES_BEFORE_LISTENING) {
        write(`portcullis: workers keep exiting before they listen (last: ${signal ?? code}); giving up`);
        giveUp();
        return;
      }
      const delay = Math.min(100 * 2 ** Math.min(failures - 1, 7), 10_000);
      write(`portcullis: worker ${worker.process.pid} exited (${signal ?? code}); starting another in ${delay} ms`);
      setTimeout(() => stopping || fork(), delay);
    });
    worker.on("message", (message: { type?: string; failure?: string; lasting?: boolean }) => {
      if (message?.type === LISTENING) failures = 0;
      if (message?.type !== AUDIT_HEALTH) return;
      if (message.failure) auditFailures.set(worker, { reason: `worker ${worker.process.pid}: ${message.failure}`, lasting: message.lasting === true });
      else auditFailures.delete(worker);
    });
  };
  const startAdmin = async () => {
    if (!admin || !adminListen) return;
    const at = parseListen(adminListen);
    const address = await listenAdmin(admin, at.host, at.port).catch((error: NodeJS.ErrnoException) => {
      write(`portcullis: ${listenError("admin", at.host, at.port, error).message}`);
      giveUp();
      return undefined;
    });
    if (!address) return;
    adminAddress = address;
    for (const worker of Object.values(cluster.workers ?? {})) if (worker) tellAdminPort(worker, address.port);
    write(`portcullis admin on ${formatAuthority(address.address, address.port)} (/healthz /readyz /metrics)`);
  };

  cluster.setupPrimary({ args: process.argv.slice(2) });
  for (let i = 0; i < count; i++) fork();
  const everyWorker = (signal: NodeJS.Signals) => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
  };
  // The primary's own uses of the policy: the admin token guarding /ui, and the clients API
  // checking registrations against the policy the workers run. Read again whenever they reload:
  // on SIGHUP, and when the file changes (each worker watches it too).
  const refresh = () =>
    void loadPolicyFile(loaded.file).then(
      (next) => {
        adminToken.use(next.policy);
        current = next;
      },
      () => undefined,
    );
  const watching = watchFile(loaded.file, refresh);
  process.on("SIGHUP", () => {
    everyWorker("SIGHUP");
    watching.remember();
    refresh();
  });
  process.on("SIGUSR2", () => everyWorker("SIGUSR2"));
  const outcome = await new Promise<number>((resolve) => {
    process.once("SIGTERM", () => resolve(0));
    process.once("SIGINT", () => resolve(0));
    giveUp = () => resolve(1);
  });
  stopping = true;
  watching.stop();
  const exits = Object.values(cluster.workers ?? {}).map((worker) => new Promise<void>((resolve) => (worker!.isDead() ? resolve() : worker!.once("exit", () => resolve()))));
  everyWorker("SIGTERM");
  await Promise.all(exits);
  live.close();
  await budgetStores.close();
  if (admin?.listening) {
    admin.closeAllConnections();
    await new Promise<void>((resolve) => admin.close(() => resolve()));
  }
  await registered?.close();
  return outcome;
}
