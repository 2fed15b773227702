import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { formatDuration } from "../policy/duration.js";
import type { AuditRecord } from "../log/audit-record.js";
import type { TunnelContext } from "./exchange.js";
import { classifyUpstreamError, ProxyError } from "./proxy-error.js";
import { answerErrorOnSocket } from "./respond.js";
import type { Runtime } from "./runtime.js";
import { formatAuthority } from "./target.js";

export function tunnelRecord(tunnel: TunnelContext, startedAt: number, fields: Partial<AuditRecord>): AuditRecord {
  return {
    msg: "tunnel",
    req_id: null,
    client: tunnel.client,
    client_addr: tunnel.clientAddr,
    method: "CONNECT",
    scheme: null,
    host: tunnel.host,
    port: tunnel.port,
    path: null,
    status: null,
    duration_ms: Math.round((performance.now() - startedAt) * 100) / 100,
    req_bytes: 0,
    resp_bytes: 0,
    decision: "allow",
    rule: null,
    reason: null,
    credentials: [],
    placeholders: [],
    ...fields,
  };
}

/**
 * A host listed under passthrough: bytes are tunnelled without interception (certificate-pinned
 * clients). The CONNECT is answered only once the upstream connection is up.
 */
export function passthroughTunnel(runtime: Runtime, tunnel: TunnelContext, client: Socket, head: Buffer): void {
  const startedAt = performance.now();
  const state = runtime.state;
  const name = formatAuthority(tunnel.host, tunnel.port);
  const connectMs = state.policy.upstream.connect_timeout;
  let reqBytes = 0;
  let respBytes = 0;
  let established = false;
  let error: ProxyError | undefined;
  const upstream = connect({ host: tunnel.host, port: tunnel.port, lookup: state.upstream.lookup, noDelay: true });
  upstream.setTimeout(connectMs, () =>
    upstream.destroy(new ProxyError("upstream_unreachable", `connecting to ${name} timed out after ${formatDuration(connectMs)}`)),
  );
  upstream.once("connect", () => {
    established = true;
    upstream.setTimeout(0);
    client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length) {
      reqBytes += head.length;
      upstream.write(head);
    }
    client.on("data", (chunk: Buffer) => (reqBytes += chunk.length));
    upstream.on("data", (chunk: Buffer) => (respBytes += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  upstream.on("error", (caught) => {
    error = classifyUpstreamError(caught, name);
    if (!established) answerErrorOnSocket(client, error, null, runtime.scrubber.scrub);
    else client.destroy();
  });
  client.on("error", () => upstream.destroy());
  let closed = 0;
  const onClose = () => {
    if (++closed === 1) {
      // One side is gone: let the other flush and read to its end (unpiping paused it), then it goes too.
      for (const socket of [client, upstream]) socket.end().resume();
      setTimeout(() => (client.destroy(), upstream.destroy()), 5000).unref();
      return;
    }
    runtime.audit.write(
      tunnelRecord(tunnel, startedAt, {
        status: established ? 200 : (error?.status ?? 502),
        req_bytes: reqBytes,
        resp_bytes: respBytes,
        reason: "passthrough host: tunnelled without interception",
        ...(error ? { error: { type: error.type, message: error.message } } : {}),
      }),
    );
  };
  client.once("close", onClose);
  upstream.once("close", onClose);
}
