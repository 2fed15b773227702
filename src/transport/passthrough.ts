import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { destroyOnError } from "../core/destroy-on-error.js";
import type { TunnelContext } from "../core/exchange.js";
import { writeErrorAnswer } from "../pipeline/answer-error.js";
import { formatAuthority } from "../pipeline/target.js";
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
  const name = formatAuthority(tunnel.host, tunnel.port);
  let reqBytes = 0;
  let respBytes = 0;
  let clientGone = false;
  const paid = runtime.audit.owed.add();
  const record = (status: number | null, error?: { type: string; message: string }) => {
    runtime.audit.write(
      tunnelRecord(tunnel, startedAt, {
        status,
        req_bytes: reqBytes,
        resp_bytes: respBytes,
        reason: "passthrough host: tunnelled without interception",
        ...(error ? { error: { type: error.type, message: error.message } } : {}),
      }),
    );
    paid();
  };
  client.on("error", destroyOnError);
  client.once("close", () => (clientGone = true));
  // Connected (directly or through the parent proxy), within connect_timeout, before the client is answered.
  runtime.state.upstream.dial(tunnel.host, tunnel.port).then(
    (upstream) => {
      if (clientGone) {
        upstream.destroy();
        return record(null, { type: "client_closed", message: "client closed the connection before the tunnel was up" });
      }
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length) {
        reqBytes += head.length;
        upstream.write(head);
      }
      client.on("data", (chunk: Buffer) => (reqBytes += chunk.length));
      upstream.on("data", (chunk: Buffer) => (respBytes += chunk.length));
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
      let closed = 0;
      const onClose = () => {
        if (++closed === 1) {
          // One side is gone: let the other flush and read to its end (unpiping paused it), then it goes too.
          for (const socket of [client, upstream]) socket.end().resume();
          setTimeout(() => (client.destroy(), upstream.destroy()), 5000).unref();
          return;
        }
        record(200);
      };
      if (client.destroyed) onClose();
      else client.once("close", onClose);
      upstream.once("close", onClose);
    },
    (caught: unknown) => {
      const error = classifyUpstreamError(caught, name);
      if (!clientGone) writeErrorAnswer(new SocketResponder(client), error, null, runtime.scrubber.scrub, true);
      record(error.status, error);
    },
  );
}
