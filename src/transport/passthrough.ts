import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { ProxyError } from "../core/errors.js";
import type { TunnelContext } from "../core/exchange.js";
import { writeErrorAnswer } from "../pipeline/answer-error.js";
import { formatAuthority } from "../pipeline/target.js";
import { formatDuration } from "../policy/duration.js";
import { tunnelRecord } from "./audit.js";
import { SocketResponder } from "./http1/socket-responder.js";
import type { TransportRuntime } from "./runtime.js";
import { classifyUpstreamError } from "./upstream/classify.js";

/**
 * A host listed under passthrough: bytes are tunnelled without interception (certificate-pinned
 * clients). The CONNECT is answered only once the upstream connection is up.
 */
export function passthroughTunnel(runtime: TransportRuntime, tunnel: TunnelContext, client: Socket, head: Buffer): void {
  const startedAt = performance.now();
  const state = runtime.state;
  const name = formatAuthority(tunnel.host, tunnel.port);
  const connectMs = state.policy.upstream.connect_timeout;
  let reqBytes = 0;
  let respBytes = 0;
  let established = false;
  let error: ProxyError | undefined;
  const upstream = state.upstream.dial(tunnel.host, tunnel.port);
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
    if (!established) writeErrorAnswer(new SocketResponder(client), error, null, runtime.scrubber.scrub, true);
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
