import https from "node:https";
import { connect as netConnect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { LookupAddress } from "node:dns";
import { connect as tlsConnect, type SecureContext, type TLSSocket } from "node:tls";
import { ProxyError } from "../../core/errors.js";
import type { Target } from "../../core/messages.js";
import { destroyOnError } from "../../core/destroy-on-error.js";
import { formatAuthority, upstreamName } from "../../pipeline/target.js";
import { DestinationDenied } from "../../policy/destinations.js";
import { formatDuration } from "../../policy/duration.js";
import { classifyUpstreamError } from "./classify.js";
import { connectTls } from "./connect-tls.js";
import { openConnectTunnel } from "./connect-tunnel.js";
import { isIpLiteral } from "../../policy/hosts.js";
import type { LookupFunction } from "./lookup.js";
import type { ParentProxy } from "./parent-proxy.js";
import type { UpstreamSettings } from "./settings.js";

/** Where a destination is reached: the portion of a target a connection needs. */
export interface Destination {
  host: string;
  port: number;
}

/**
 * Opens every connection portcullis makes to a destination, directly or through the parent
 * proxy (`upstream.proxy`, unless `upstream.no_proxy` lists the host), always the same way:
 * the destination judged by the guard (`upstream.resolve`, then DNS, every address checked,
 * portcullis' own listener refused), TLS verified against the upstream trust with SNI, all of
 * it within connect_timeout. Other modules that must reach a destination (token endpoints)
 * open their connections here.
 */
export class UpstreamConnector {
  private requestAgent: https.Agent | undefined;

  constructor(
    private readonly lookup: LookupFunction,
    private readonly trust: SecureContext,
    private readonly settings: UpstreamSettings,
    readonly parent: ParentProxy | undefined,
  ) {}

  /** The parent a connection to `host` goes through, or undefined when it is dialled directly. */
  parentFor(host: string): ParentProxy | undefined {
    return this.parent?.carries(host) ? this.parent : undefined;
  }

  /** A verified TLS connection offering `alpn`; the protocol the destination chose is `alpnProtocol`. */
  tls(destination: Destination, alpn: string[] = ["http/1.1"]): Promise<TLSSocket> {
    const target: Target = { scheme: "https", host: destination.host, port: destination.port };
    const parent = this.parentFor(destination.host);
    if (!parent) return connectTls(target, this.trust, this.lookup, this.settings, alpn);
    return this.throughParent(parent, destination, (socket, fail, done) => {
      const tls = tlsConnect({
        socket,
        servername: isIpLiteral(destination.host) ? undefined : destination.host,
        secureContext: this.trust,
        minVersion: "TLSv1.2",
        ALPNProtocols: alpn,
      });
      const onError = (error: unknown) => fail(classifyUpstreamError(error, upstreamName(target)), tls);
      tls.once("error", onError);
      tls.once("secureConnect", () => {
        tls.off("error", onError);
        // Until its new owner listens, an error (a reset) must not go unhandled.
        tls.on("error", destroyOnError);
        done(tls);
      });
      return tls;
    });
  }

  /**
   * An https.Agent whose every connection is `tls()`'s (guarded, verified, through the parent
   * unless no_proxy lists the host), kept alive and reused: for `https.request` to a token
   * endpoint or any other destination portcullis itself must reach. Destroyed with the pool.
   */
  agent(): https.Agent {
    if (this.requestAgent) return this.requestAgent;
    const connector = this;
    this.requestAgent = new (class extends https.Agent {
      override createConnection(options: https.RequestOptions, callback?: (error: Error | null, socket: Duplex) => void): Duplex | undefined {
        connector.tls({ host: options.host ?? "", port: Number(options.port ?? 443) }).then(
          (socket) => callback?.(null, socket),
          (error: Error) => callback?.(error, undefined as unknown as Duplex),
        );
        return undefined;
      }
    })({ keepAlive: true, timeout: 30_000 });
    return this.requestAgent;
  }

  destroy(): void {
    this.requestAgent?.destroy();
  }

  /** A raw TCP connection (passthrough tunnels): connected when it resolves. */
  tcp(destination: Destination): Promise<Socket> {
    const parent = this.parentFor(destination.host);
    if (parent) return this.throughParent(parent, destination, (socket, _fail, done) => (done(socket), socket));
    const name = formatAuthority(destination.host, destination.port);
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: destination.host, port: destination.port, lookup: this.lookup, noDelay: true });
      const fail = (error: unknown) => {
        clearTimeout(timer);
        socket.destroy();
        reject(classifyUpstreamError(error, name));
      };
      const timer = setTimeout(() => fail(new ProxyError("upstream_unreachable", `connecting to ${name} timed out after ${formatDuration(this.settings.connectMs)}`)), this.settings.connectMs);
      socket.once("error", fail);
      socket.once("connect", () => {
        const why = this.settings.guard.checkSelf(socket.remoteAddress ?? "", socket.remotePort);
        if (why) return fail(new DestinationDenied(`${destination.host} resolves to ${why.replace(/^destination /, "")}`));
        clearTimeout(timer);
        socket.off("error", fail);
        socket.on("error", destroyOnError);
        resolve(socket);
      });
    });
  }

  /**
   * Judges a destination as a direct connection would before anything is asked of the parent:
   * every address its name resolves to (upstream.resolve first) must pass the guard, and none
   * may be portcullis itself.
   */
  checkDestination(destination: Destination): Promise<void> {
    return new Promise((resolve, reject) => {
      this.lookup(destination.host, { all: true }, (error, addresses) => {
        if (error) return reject(classifyUpstreamError(error, formatAuthority(destination.host, destination.port)));
        for (const { address } of addresses as LookupAddress[]) {
          const why = this.settings.guard.checkSelf(address, destination.port);
          if (why) return reject(classifyUpstreamError(new DestinationDenied(`${destination.host} resolves to ${why.replace(/^destination /, "")}`), destination.host));
        }
        resolve();
      });
    });
  }

  /**
   * The destination judged, a CONNECT tunnel from the parent, then `over` (the TLS handshake,
   * or nothing) on it; one timer, connect_timeout, for all of it.
   */
  private throughParent<T extends Socket>(
    parent: ParentProxy,
    destination: Destination,
    over: (socket: Socket, fail: (error: ProxyError, socket: Socket) => void, done: (result: T) => void) => Socket,
  ): Promise<T> {
    const authority = formatAuthority(parent.destinationHost(destination.host), destination.port);
    const name = formatAuthority(destination.host, destination.port);
    return new Promise<T>((resolve, reject) => {
      let current: { destroy(): void } | undefined;
      let settled = false;
      const fail = (error: unknown, socket?: Socket) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket?.destroy();
        current?.destroy();
        reject(error instanceof ProxyError ? error : classifyUpstreamError(error, name));
      };
      const timer = setTimeout(
        () => fail(new ProxyError("upstream_unreachable", `connecting to ${name} through the ${parent.name} timed out after ${formatDuration(this.settings.connectMs)}`)),
        this.settings.connectMs,
      );
      Promise.all([this.checkDestination(destination), parent.authorization()])
        .then(([, authorization]) => {
          if (settled) return undefined;
          return openConnectTunnel(parent, authority, authorization, (request) => (current = request));
        })
        .then((socket) => {
          if (!socket) return;
          if (settled) return void socket.destroy();
          current = over(socket, fail, (result) => {
            if (settled) return void result.destroy();
            settled = true;
            clearTimeout(timer);
            resolve(result);
          });
        })
        .catch(fail);
    });
  }
}
