import type { EventEmitter } from "node:events";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { SecureContextStats } from "../ca/secure-contexts.js";
import type { AuditRecord } from "../core/audit-record.js";

/** Distinct host label values kept before the rest are counted as "_other" (label cardinality stays bounded). */
const MAX_HOST_LABELS = 500;
/** Distinct model label values kept before the rest are counted as "_other" (a client names the model it asks for). */
const MAX_MODEL_LABELS = 100;

function opened(gauge: Gauge): () => void {
  gauge.inc();
  let open = true;
  return () => {
    if (open) gauge.dec();
    open = false;
  };
}

function statusClass(status: number | null): string {
  return status === null ? "none" : `${Math.floor(status / 100)}xx`;
}

/** The proxy's Prometheus metrics, fed by every audit record and by tunnel and WebSocket lifecycles. */
export class ProxyMetrics {
  readonly registry: Registry;
  private readonly requests: Counter<"decision" | "status_class" | "host" | "kind" | "http_version">;
  private readonly duration: Histogram<"decision" | "status_class" | "kind">;
  private readonly upstreamErrors: Counter<"type">;
  private readonly reloads: Counter<"result">;
  private readonly openTunnels: Gauge;
  private readonly openWebSockets: Gauge;
  private readonly hosts = new Set<string>();
  private readonly llmTokens: Counter<"client" | "model" | "kind">;
  private readonly llmRequests: Counter<"client" | "model">;
  private readonly models = new Set<string>();
  private readonly auditDropped: Counter;
  private auditWritable: () => boolean = () => true;

  constructor(certificateStats: () => SecureContextStats, registry = new Registry()) {
    this.registry = registry;
    // The default metrics are already named process_* and nodejs_*: one prefix, not two.
    collectDefaultMetrics({ register: registry, prefix: "portcullis_" });
    this.requests = new Counter({
      name: "portcullis_requests_total",
      help: "Finished events (HTTP exchanges, WebSocket sessions, tunnels, denials) by decision, status class and host",
      labelNames: ["decision", "status_class", "host", "kind", "http_version"],
      registers: [registry],
    });
    this.duration = new Histogram({
      name: "portcullis_request_duration_seconds",
      help: "Time from request start to the end of the response body (or the session)",
      labelNames: ["decision", "status_class", "kind"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    });
    this.upstreamErrors = new Counter({
      name: "portcullis_upstream_errors_total",
      help: "Errors answered or recorded, by type (upstream_unreachable, upstream_tls_error, credential_unavailable, ...)",
      labelNames: ["type"],
      registers: [registry],
    });
    this.llmTokens = new Counter({
      name: "portcullis_llm_tokens_total",
      help: "Tokens LLM APIs reported, by client, model and kind (input, output, cache_read, cache_write)",
      labelNames: ["client", "model", "kind"],
      registers: [registry],
    });
    this.llmRequests = new Counter({
      name: "portcullis_llm_requests_total",
      help: "LLM API exchanges whose usage was read, by client and model",
      labelNames: ["client", "model"],
      registers: [registry],
    });
    this.reloads = new Counter({ name: "portcullis_policy_reloads_total", help: "Policy reloads by result", labelNames: ["result"], registers: [registry] });
    this.openTunnels = new Gauge({ name: "portcullis_open_tunnels", help: "CONNECT tunnels currently open", registers: [registry] });
    this.openWebSockets = new Gauge({ name: "portcullis_open_websockets", help: "WebSocket sessions currently relayed", registers: [registry] });
    this.auditDropped = new Counter({ name: "portcullis_audit_lines_dropped_total", help: "Audit lines dropped while the audit log could not be written (its hold full, or its reader gone)", registers: [registry] });
    const metrics = this;
    new Gauge({
      name: "portcullis_audit_log_writable",
      help: "1 while audit lines reach the audit log, 0 while it refuses writes (requests are then refused)",
      // Across workers: 0 when any one of them cannot write.
      aggregator: "min",
      registers: [registry],
      collect() {
        this.set(metrics.auditWritable() ? 1 : 0);
      },
    });
    new Gauge({
      name: "portcullis_certificate_cache",
      help: "Forged-certificate cache: hits and misses of the in-memory LRU, forgeries and reuses from disk, since start",
      labelNames: ["event"],
      registers: [registry],
      collect() {
        const stats = certificateStats();
        this.set({ event: "hit" }, stats.hits);
        this.set({ event: "miss" }, stats.misses);
        this.set({ event: "forged" }, stats.forged);
        this.set({ event: "disk_hit" }, stats.diskHits);
      },
    });
  }

  private hostLabel(host: string): string {
    if (this.hosts.has(host)) return host;
    if (this.hosts.size >= MAX_HOST_LABELS) return "_other";
    this.hosts.add(host);
    return host;
  }

  private modelLabel(model: string | undefined): string {
    if (model === undefined) return "unknown";
    if (this.models.has(model)) return model;
    if (this.models.size >= MAX_MODEL_LABELS) return "_other";
    this.models.add(model);
    return model;
  }

  private observeLlm(record: AuditRecord): void {
    const { llm } = record;
    if (!llm) return;
    const labels = { client: record.client ?? "-", model: this.modelLabel(llm.model) };
    this.llmRequests.inc(labels);
    const kinds = { input: llm.input_tokens, output: llm.output_tokens, cache_read: llm.cache_read_tokens, cache_write: llm.cache_write_tokens };
    for (const [kind, tokens] of Object.entries(kinds)) if (tokens) this.llmTokens.inc({ ...labels, kind }, tokens);
  }

  observe(record: AuditRecord): void {
    this.observeLlm(record);
    const status = statusClass(record.status);
    // Only traffic the policy let through names its host: anyone who can reach the proxy can
    // make it refuse arbitrary names, and those must not fill the label slots (or be read back).
    const host = record.decision === "allow" ? this.hostLabel(record.host || "-") : "_denied";
    this.requests.inc({ decision: record.decision, status_class: status, host, kind: record.msg, http_version: record.http_version ?? "1.1" });
    this.duration.observe({ decision: record.decision, status_class: status, kind: record.msg }, record.duration_ms / 1000);
    if (record.error && record.error.type !== "policy_denied" && record.error.type !== "proxy_auth_required") {
      this.upstreamErrors.inc({ type: record.error.type });
    }
  }

  /** Counts the tunnel open until its socket closes (one listener shared by every tunnel, no closure per socket). */
  countTunnel(socket: EventEmitter): void {
    this.openTunnels.inc();
    socket.on("close", this.tunnelClosed);
  }

  private readonly tunnelClosed = (): void => void this.openTunnels.dec();

  webSocketOpened(): () => void {
    return opened(this.openWebSockets);
  }

  /** Tunnels and WebSocket sessions open now (the live view). */
  async openCounts(): Promise<{ tunnels: number; websockets: number }> {
    const [tunnels, websockets] = await Promise.all([this.openTunnels.get(), this.openWebSockets.get()]);
    return { tunnels: tunnels.values[0]?.value ?? 0, websockets: websockets.values[0]?.value ?? 0 };
  }

  /** Where the audit log's health is read at each scrape. */
  watchAuditLog(writable: () => boolean): void {
    this.auditWritable = writable;
  }

  auditLineDropped(): void {
    this.auditDropped.inc();
  }

  reloaded(ok: boolean): void {
    this.reloads.inc({ result: ok ? "success" : "failure" });
  }
}
