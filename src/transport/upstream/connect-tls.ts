import { connect, type SecureContext, type TLSSocket } from "node:tls";
import { ProxyError } from "../../core/errors.js";
import { destroyOnError } from "../../core/destroy-on-error.js";
import type { Target } from "../../core/messages.js";
import { upstreamName } from "../../pipeline/target.js";
import { DestinationDenied } from "../../policy/destinations.js";
import { formatDuration } from "../../policy/duration.js";
import { classifyUpstreamError } from "./classify.js";
import { isIpLiteral } from "../../policy/hosts.js";
import type { LookupFunction } from "./lookup.js";
import type { UpstreamSettings } from "./settings.js";

/**
 * A verified TLS connection to an upstream offering ALPN `alpn`; resolves once the
 * handshake is done (the upstream's choice is `alpnProtocol`), within connect_timeout.
 */
export function connectTls(target: Target, trust: SecureContext, lookup: LookupFunction, settings: UpstreamSettings, alpn = ["h2", "http/1.1"]): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: target.host,
      port: target.port,
      servername: isIpLiteral(target.host) ? undefined : target.host,
      secureContext: trust,
      minVersion: "TLSv1.2",
      ALPNProtocols: alpn,
      lookup,
    });
    socket.setNoDelay(true);
    const fail = (error: unknown) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error instanceof ProxyError ? error : classifyUpstreamError(error, upstreamName(target)));
    };
    const timer = setTimeout(() => fail(new ProxyError("upstream_unreachable", `connecting to ${upstreamName(target)} timed out after ${formatDuration(settings.connectMs)}`)), settings.connectMs);
    socket.once("error", fail);
    // A name that resolves to portcullis itself (allowed by allow_ips) is caught on the address dialled.
    socket.once("connect", () => {
      const why = settings.guard.checkSelf(socket.remoteAddress ?? "", socket.remotePort);
      if (why) fail(new DestinationDenied(`${target.host} resolves to ${why.replace(/^destination /, "")}`));
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.off("error", fail);
      // Until its new owner listens, an error (a reset) must not go unhandled.
      socket.on("error", destroyOnError);
      resolve(socket);
    });
  });
}
