import type { LookupAddress, LookupOptions } from "node:dns";
import { isIP, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { SecureContext } from "node:tls";
import type { Dispatcher } from "undici";

/** Same shape as the upstream pool's lookup: the policy's name overrides and the destination guard in front of DNS. */
export type TokenLookup = (
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/** How token endpoints are reached: exactly as upstreams are (upstream.trust, upstream.resolve, the guard, the timeouts). */
export interface TokenEndpointAccess {
  trust: SecureContext;
  lookup: TokenLookup;
  connectMs: number;
  responseMs: number;
  /**
   * Where a parent proxy (upstream.proxy) plugs in: a verified TLS connection to the endpoint,
   * made the way upstream connections are (through the parent unless no_proxy says otherwise).
   * Absent, token endpoints are dialled directly.
   */
  connect?: (host: string, port: number) => Promise<Duplex>;
}

export interface TokenRequest {
  method: "GET" | "POST";
  url: URL;
  headers: Record<string, string>;
  body?: string;
}

export interface TokenResponse {
  status: number;
  /** The parsed JSON body; undefined when the body is not JSON. Never put into a message: it may hold a secret. */
  json: unknown;
}

/** Larger answers from a token endpoint are refused: no real one sends this much. */
const MAX_BODY_BYTES = 1024 * 1024;

/** Why a token endpoint could not be asked, in words that hold no secret. */
export class TokenFetchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenFetchError";
  }
}

/** Where a request went, for messages: origin and path, never the query (it could carry something sensitive). */
export function endpointName(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function describeFailure(error: unknown): string {
  const err = error as NodeJS.ErrnoException & { reason?: string };
  if (err.code === "EPORTCULLIS_DESTINATION") return err.message;
  if (err.code === "UND_ERR_CONNECT_TIMEOUT") return "connect timed out";
  if (err.code === "UND_ERR_HEADERS_TIMEOUT" || err.code === "UND_ERR_BODY_TIMEOUT") return "no answer in time";
  return err.code ?? err.name ?? "error";
}

/**
 * The one place minted and fetched secrets are asked for over the network (GitHub, OAuth 2.0
 * token endpoints, Vault): HTTPS verified against the same trust as upstream requests,
 * HTTP/1.1, bounded in time and size.
 */
export class TokenFetch {
  private dispatcher: Dispatcher | undefined;
  /** undici is loaded on first use: most policies mint nothing, and every worker would pay for it at start. */
  private undici: Promise<typeof import("undici")> | undefined;

  constructor(private readonly access: TokenEndpointAccess) {
  }

  private async client(): Promise<{ request: (typeof import("undici"))["request"]; dispatcher: Dispatcher }> {
    const undici = await (this.undici ??= import("undici"));
    const { connect } = this.access;
    this.dispatcher ??= new undici.Agent({
      connect: connect
        ? (options, callback) =>
            void connect(options.hostname, Number(options.port) || 443).then(
              (socket) => callback(null, socket as Socket),
              (error: Error) => callback(error, null),
            )
        : { secureContext: this.access.trust, lookup: this.access.lookup, minVersion: "TLSv1.2", timeout: this.access.connectMs },
      connectTimeout: this.access.connectMs,
      headersTimeout: this.access.responseMs,
      bodyTimeout: this.access.responseMs,
      keepAliveTimeout: 5_000,
      connections: 4,
    });
    return { request: undici.request, dispatcher: this.dispatcher };
  }

  async send(what: string, req: TokenRequest): Promise<TokenResponse> {
    const where = endpointName(req.url);
    let response: Dispatcher.ResponseData;
    try {
      await this.checkIpLiteral(req.url.hostname);
      const { request, dispatcher } = await this.client();
      // undici follows no redirect without an interceptor: a token endpoint that redirects is an error, not a hop.
      response = await request(req.url, { method: req.method, headers: req.headers, body: req.body, dispatcher });
    } catch (error) {
      throw new TokenFetchError(`${what}: cannot reach ${where} (${describeFailure(error)})`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_BODY_BYTES) {
          response.body.destroy();
          throw new TokenFetchError(`${what}: ${where} answered with more than ${MAX_BODY_BYTES} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof TokenFetchError) throw error;
      throw new TokenFetchError(`${what}: ${where} broke off its answer (${describeFailure(error)})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      json = undefined;
    }
    return { status: response.statusCode, json };
  }

  /** A socket dialling an IP literal never calls lookup: its address goes through the same guard explicitly. */
  private checkIpLiteral(hostname: string): Promise<void> {
    const host = hostname.replace(/^\[|\]$/g, "");
    if (!isIP(host)) return Promise.resolve();
    return new Promise((resolve, reject) => this.access.lookup(host, { all: true }, (error) => (error ? reject(error) : resolve())));
  }

  async close(): Promise<void> {
    await this.dispatcher?.close();
  }
}
