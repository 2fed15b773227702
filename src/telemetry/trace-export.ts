import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { PublishedRecord } from "../log/audit-feed.js";
import { spanAttributes, spanError, spanName } from "./span-fields.js";

export interface TraceExportOptions {
  /** The collector's OTLP/HTTP endpoint: http://HOST:4318 (/v1/traces is added) or the full traces URL. */
  otlp: string;
  serviceName: string;
  /** Spans kept waiting for the collector; more are dropped, never waited for. */
  maxQueueSize?: number;
  scheduledDelayMs?: number;
  exportTimeoutMs?: number;
  /** How long a drain waits for the last spans to reach the collector. */
  shutdownTimeoutMs?: number;
  /** Told when a batch could not be delivered (its spans are dropped). */
  onExportFailure?: (error: Error, spans: number) => void;
}

/** The OTLP exporter, reporting failed batches: the SDK itself only tells its (silent) diag logger. */
class ReportingExporter implements SpanExporter {
  constructor(
    private readonly inner: SpanExporter,
    private readonly onFailure: (error: Error, spans: number) => void,
  ) {}

  export(spans: ReadableSpan[], done: Parameters<SpanExporter["export"]>[1]): void {
    this.inner.export(spans, (result) => {
      // ExportResultCode.SUCCESS is 0.
      if (result.code !== 0) this.onFailure(result.error ?? new Error("export failed"), spans.length);
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

export interface TraceExport {
  /** Records one span for a finished exchange, session, tunnel or denial. */
  record(record: PublishedRecord): void;
  /** Sends what is queued (bounded by the export timeout) and stops. */
  shutdown(): Promise<void>;
}

export function tracesUrl(endpoint: string): string {
  const url = new URL(endpoint);
  if (!url.pathname.endsWith("/v1/traces")) url.pathname = `${url.pathname.replace(/\/+$/, "")}/v1/traces`;
  return url.toString();
}

/**
 * Exports one span per audit record through the OpenTelemetry SDK. The provider is never
 * registered globally and no propagator is set: nothing is added to upstream requests, and
 * nothing else in the process is traced by accident.
 */
export function startTraceExport(options: TraceExportOptions): TraceExport {
  const exportTimeoutMs = options.exportTimeoutMs ?? 5_000;
  const otlp = new OTLPTraceExporter({ url: tracesUrl(options.otlp), timeoutMillis: exportTimeoutMs });
  const exporter = new ReportingExporter(otlp, options.onExportFailure ?? (() => undefined));
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        maxQueueSize: options.maxQueueSize ?? 2048,
        maxExportBatchSize: Math.min(512, options.maxQueueSize ?? 2048),
        scheduledDelayMillis: options.scheduledDelayMs ?? 1_000,
        exportTimeoutMillis: exportTimeoutMs,
      }),
    ],
  });
  const tracer = provider.getTracer("portcullis");
  return {
    record(record) {
      const end = record.time;
      // A rebuilt audit line writes a duration whose digits held a secret as "[REDACTED]": the
      // span then starts where it ends (NaN would make the exporter drop the whole batch).
      const duration: unknown = record.duration_ms;
      const startTime = typeof duration === "number" && Number.isFinite(duration) ? end - duration : end;
      const span = tracer.startSpan(spanName(record), { kind: SpanKind.SERVER, startTime, attributes: spanAttributes(record) });
      const error = spanError(record);
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end(end);
    },
    async shutdown() {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.shutdownTimeoutMs ?? 3_000)));
      await Promise.race([provider.shutdown().catch(() => undefined), bound]);
      clearTimeout(timer);
    },
  };
}
