import type { Socket } from "node:net";
import type { Duplex, Readable } from "node:stream";
import type { ProxyError } from "./errors.js";
import type { TunnelContext } from "./exchange.js";
import type { RawHeaders } from "./headers.js";

/**
 * The protocol-neutral shapes every stage works on. Transports (HTTP/1.1 and h2 servers,
 * upstream pools) turn their wire objects into these and back; nothing above them sees a
 * Node HTTP object or a socket.
 */

export type HttpVersion = "1.1" | "2";
export type Scheme = "http" | "https";

export interface Target {
  scheme: Scheme;
  host: string;
  port: number;
}

/** A request as the client sent it, whichever protocol carried it. */
export interface InboundRequest {
  readonly httpVersion: HttpVersion;
  readonly method: string;
  /** The request-target as sent: origin form, absolute form or "*" (HTTP/1.1), or :path (h2). */
  readonly target: string;
  /** Every authority the request names: its Host headers (HTTP/1.1), :authority and any Host (h2). */
  readonly authorities: readonly string[];
  /** End-to-end and hop-by-hop headers in the client's order and case; never pseudo-headers. */
  readonly headers: RawHeaders;
  /** The CONNECT this request came through; undefined for absolute-form requests to the listener. */
  readonly tunnel: TunnelContext | undefined;
  /** Whether the client spoke TLS to portcullis (inside the tunnel). */
  readonly secure: boolean;
  readonly clientAddr: string;
  /** The protocol the client asks to switch to: HTTP/1.1 `Upgrade`, or h2 extended CONNECT's :protocol. */
  readonly upgrade: string | undefined;
  /** Whether a body follows the head (it may have no declared length). */
  readonly hasBody: boolean;
  readonly body: Readable;
  /** Trailers that followed the body; complete once the body ended. */
  trailers(): RawHeaders;
}

/** How portcullis answers the client, whichever protocol carries the answer. */
export interface Responder {
  readonly httpVersion: HttpVersion;
  readonly headersSent: boolean;
  /** The status sent with the head, once it was. */
  readonly statusSent: number | undefined;
  /** The client is gone, or the response was broken off. */
  readonly destroyed: boolean;
  /** The whole response was handed to the transport. */
  readonly finished: boolean;
  writeContinue(): void;
  /** `alone`: nothing follows the head, no body and no trailers (an h2 HEADERS frame with END_STREAM). */
  writeHead(status: number, reason: string | undefined, headers: RawHeaders, alone?: boolean): void;
  /** false: wait for onDrain before writing more. */
  write(chunk: Buffer): boolean;
  end(body?: Buffer, trailers?: RawHeaders): void;
  /** Breaks the response off: the client sees a failed transfer, never a short success. */
  fail(): void;
  onDrain(listener: () => void): void;
  /** Called once, when the response is over or the client left. */
  onClose(listener: () => void): void;
  /** Accepts an upgrade: sends the head and hands over the bytes that follow it. */
  upgrade(status: number, reason: string | undefined, headers: RawHeaders): Duplex;
}

/** The request portcullis sends upstream; stages edit it before it leaves. */
export interface OutgoingRequest {
  method: string;
  /** Path and query sent upstream (credentials and placeholders may change it). */
  path: string;
  /** End-to-end headers, Host included (transports map it to :authority where they speak h2). */
  headers: RawHeaders;
  hasBody: boolean;
  /** Set when the body had to be read before forwarding (placeholder substitution); sent instead of streaming. */
  body?: Buffer;
  /** `body` is only the start of the client's body: the rest streams on from the client after it. */
  bodyContinues?: boolean;
  /** Streamed instead of the client's body: a stage's rewrite of all of it (aws-chunked signatures); the client's trailers still follow. */
  bodyStream?: Readable;
  /** The protocol to switch to (WebSocket handshakes); the upstream answers 101 or refuses. */
  upgrade?: string;
}

export interface UpstreamResponse {
  readonly httpVersion: HttpVersion;
  readonly status: number;
  readonly reason: string | undefined;
  readonly headers: RawHeaders;
  readonly body: Readable;
  /** The head is the whole response: the upstream said so (h2 END_STREAM on its HEADERS; gRPC's trailers-only answers). */
  readonly headOnly: boolean;
  /** The whole body arrived (false while it streams, or when it was cut). */
  readonly complete: boolean;
  /** Trailers that followed the body; complete once the body ended. */
  trailers(): RawHeaders;
}

/** What an upstream call reports, each at most once (continue aside). */
export interface UpstreamEvents {
  /** The request is on its way, in this protocol. */
  sent(version: HttpVersion): void;
  continue(): void;
  response(response: UpstreamResponse): void;
  /** The upstream switched protocols: the bytes both ways are `stream`'s. */
  upgraded(response: UpstreamResponse, stream: Duplex, head: Buffer): void;
  /** The call failed before a response (or an upgrade) arrived. */
  error(error: ProxyError): void;
}

/** One request on its way upstream: its body is written here. */
export interface UpstreamCall {
  write(chunk: Buffer): boolean;
  onDrain(listener: () => void): void;
  end(trailers?: RawHeaders): void;
  /** The client is gone: whatever is in flight is abandoned (h1: the connection closes; h2: the stream is reset). */
  abort(): void;
}

/** Sends requests to upstreams: the HTTP/1.1 pool, the h2 session pool, whichever the upstream speaks. */
export interface Upstream {
  send(target: Target, request: OutgoingRequest, events: UpstreamEvents): UpstreamCall;
  /** A raw TCP connection (passthrough tunnels), connected, through the same guarded resolver and the parent proxy. */
  dial(host: string, port: number): Promise<Socket>;
  destroy(): void;
}

/** Where secret values come from (env, file, command, ...), by name. */
export interface SecretResolver {
  resolve(name: string): Promise<string>;
}
