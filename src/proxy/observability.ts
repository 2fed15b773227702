import cluster from "node:cluster";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { LiveView, type OpenCounts } from "../admin/live-view.js";
import type { AdminRoute } from "../admin/server.js";
import { uiRoutes } from "../admin/ui-routes.js";
import { SecretStore } from "../credentials/secrets.js";
import type { AuditFeed, PublishedRecord } from "../log/audit-feed.js";
import type { Scrubber } from "../log/scrub.js";
import type { Policy } from "../policy/schema.js";
import { formatAuthority } from "../pipeline/target.js";
import type { TraceExport } from "../telemetry/trace-export.js";

const AUDIT_MESSAGE = "portcullis:audit";
const ADMIN_TOKEN = "admin.token";

/** The admin token's current value (undefined when none is set); rebuilt on every policy reload. */
export class AdminToken {
  private store: SecretStore | undefined;

  constructor(private readonly scrubber: Scrubber) {}

  use(policy: Policy): void {
    this.store = policy.admin.token ? new SecretStore({ [ADMIN_TOKEN]: policy.admin.token }, this.scrubber) : undefined;
    // Resolved at once: its value is then scrubbed from every line, and a broken source shows early.
    void this.store?.resolve(ADMIN_TOKEN).catch(() => undefined);
  }

  readonly value = async (): Promise<string | undefined> => this.store?.resolve(ADMIN_TOKEN);
}

export interface Observability {
  /** The admin listener's extra routes (/ui). */
  routes: AdminRoute[];
  /** Flushes queued spans (bounded) and ends open event streams. */
  close(): Promise<void>;
}

export interface ObservabilityOptions {
  policy: Policy;
  feed: AuditFeed;
  diagnostics: Logger;
  adminToken: AdminToken;
  /** Whether this process serves an admin listener (the primary does, for its workers). */
  serveAdmin: boolean;
  adminAddress: () => AddressInfo | undefined;
  openCounts: () => Promise<OpenCounts>;
}

async function startTraces(policy: Policy, feed: AuditFeed, diagnostics: Logger): Promise<TraceExport | undefined> {
  if (!policy.telemetry.otlp) return undefined;
  // Loaded only when traces are on: the SDK is a large import for every start (and every worker).
  const { startTraceExport } = await import("../telemetry/trace-export.js");
  let lastWarning = 0;
  const traces = startTraceExport({
    otlp: policy.telemetry.otlp,
    serviceName: policy.telemetry.service_name,
    onExportFailure: (error, spans) => {
      // Once a minute at most: a collector that is down must not flood the diagnostics.
      if (Date.now() - lastWarning < 60_000) return;
      lastWarning = Date.now();
      diagnostics.warn({ otlp: policy.telemetry.otlp, spans, error: error.message }, "trace export failed; spans dropped (traffic is not affected)");
    },
  });
  feed.subscribe((record) => traces.record(record));
  diagnostics.info({ otlp: policy.telemetry.otlp, service_name: policy.telemetry.service_name }, "exporting traces");
  return traces;
}

export function liveRoutes(live: LiveView, adminToken: AdminToken, adminAddress: () => AddressInfo | undefined): AdminRoute[] {
  return uiRoutes({
    live,
    adminToken: adminToken.value,
    selfUrl: () => {
      const address = adminAddress();
      return address ? `http://${formatAuthority(address.address, address.port)}` : undefined;
    },
  });
}

/**
 * Traces and the live view, both fed by the audit feed. A cluster worker has no admin listener:
 * it exports its own spans and hands its records to the primary, whose /ui shows every worker's.
 */
export async function startObservability(options: ObservabilityOptions): Promise<Observability> {
  const { policy, feed } = options;
  const traces = await startTraces(policy, feed, options.diagnostics);
  const isWorker = cluster.isWorker && process.env.PORTCULLIS_WORKER === "1";
  let live: LiveView | undefined;
  if (options.serveAdmin) {
    live = new LiveView({ openCounts: options.openCounts });
    feed.subscribe((record) => live!.add(record));
  } else if (isWorker && policy.admin.listen) {
    feed.subscribe(forwardToPrimary());
  }
  return {
    routes: live ? liveRoutes(live, options.adminToken, options.adminAddress) : [],
    async close() {
      live?.close();
      await traces?.shutdown();
    },
  };
}

/** Records a worker has handed to the IPC channel and the primary has not yet taken. */
const MAX_UNSENT_RECORDS = 1000;

/** Worker side: each record to the primary's live view; dropped (never queued without bound) while the primary lags. */
function forwardToPrimary(): (record: PublishedRecord) => void {
  let unsent = 0;
  return (record) => {
    if (!process.connected || !process.send || unsent >= MAX_UNSENT_RECORDS) return;
    unsent++;
    process.send({ type: AUDIT_MESSAGE, record }, undefined, {}, () => unsent--);
  };
}

/** Primary side: a worker's message, if it is an audit record, for the live view. */
export function workerRecord(message: unknown): PublishedRecord | undefined {
  const candidate = message as { type?: string; record?: PublishedRecord } | null;
  return candidate?.type === AUDIT_MESSAGE && candidate.record ? candidate.record : undefined;
}

/** Open tunnels and WebSockets from Prometheus text (the primary's sum over its workers). */
export function openCountsFromText(text: string): OpenCounts {
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return { tunnels: read("portcullis_open_tunnels"), websockets: read("portcullis_open_websockets") };
}
