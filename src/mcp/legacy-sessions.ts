/**
 * The older HTTP+SSE transport (MCP 2024-11-05): the client opens an SSE stream, whose
 * `endpoint` event names the URL it then POSTs its messages to; the POST is answered 202 and
 * the real answers come on the stream. A refused tool call must therefore be answered on the
 * stream: this registry finds the open stream a POST belongs to.
 */

/** An open session stream: portcullis can add events to it. */
export interface LegacyStream {
  /** The session id (the endpoint's sessionId parameter, else the endpoint itself). */
  readonly session: string;
  /** Adds events to the stream; false when it is already over. */
  inject(events: readonly string[]): boolean;
}

/** Where a client POSTs, as the registry knows it: the client identity and the absolute URL. */
export function endpointKey(client: string | null, url: string): string {
  return `${client ?? ""} ${url}`;
}

function withoutFragment(url: URL): string {
  return `${url.origin}${url.pathname}${url.search}`;
}

/** The URL of a request, as an endpoint event would name it (origin, path and query, normalised by the URL parser). */
export function requestUrl(origin: string, path: string): string | undefined {
  try {
    return withoutFragment(new URL(path, origin));
  } catch {
    return undefined;
  }
}

/**
 * What an `endpoint` event's data names, resolved against the stream's URL: the URL the client
 * will POST to, and the session it stands for. Another origin than the stream's is ignored
 * (clients refuse it too).
 */
export function legacyEndpoint(streamUrl: string, data: string): { url: string; session: string } | undefined {
  let stream: URL;
  let url: URL;
  try {
    stream = new URL(streamUrl);
    url = new URL(data.trim(), stream);
  } catch {
    return undefined;
  }
  if (url.origin !== stream.origin) return undefined;
  const session = url.searchParams.get("sessionId") ?? url.searchParams.get("session_id") ?? `${url.pathname}${url.search}`;
  return { url: withoutFragment(url), session };
}

/**
 * The open session streams by endpoint. Bounded: past `capacity` the oldest entry goes (its
 * stream still works; a refused call on it is then answered on the POST instead). Entries go
 * when their stream ends.
 */
export class LegacySessionRegistry {
  private readonly streams = new Map<string, LegacyStream>();

  constructor(readonly capacity = 10_000) {}

  /** Registers a stream under its endpoint; the function returned removes it (if it is still that stream). */
  open(key: string, stream: LegacyStream): () => void {
    this.streams.delete(key);
    this.streams.set(key, stream);
    for (const oldest of this.streams.keys()) {
      if (this.streams.size <= this.capacity) break;
      this.streams.delete(oldest);
    }
    return () => {
      if (this.streams.get(key) === stream) this.streams.delete(key);
    };
  }

  find(key: string): LegacyStream | undefined {
    return this.streams.get(key);
  }

  get size(): number {
    return this.streams.size;
  }
}
