import { createHash, randomBytes } from "node:crypto";
import { tokenMatches } from "./token-check.js";

const DEFAULT_TTL_MS = 12 * 60 * 60 * 1000;
const MAX_SESSIONS = 64;

interface Session {
  expiresAt: number;
  /** Which admin token opened it: a rotated token ends the sessions of the old one. */
  tokenDigest: string;
}

/**
 * Browser sessions of /ui: a page opened with the admin token gets a random session id in an
 * HttpOnly, SameSite=Strict cookie, so the token leaves the address bar (and history, and
 * Referer) at once and the page's EventSource, which cannot send headers, still authenticates.
 */
export class UiSessions {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly ttlMs = DEFAULT_TTL_MS) {}

  mint(token: string): string {
    const id = randomBytes(32).toString("base64url");
    this.sessions.set(id, { expiresAt: Date.now() + this.ttlMs, tokenDigest: digest(token) });
    // Oldest first (Map order): the bound is on memory, not on who may log in.
    while (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    return id;
  }

  valid(id: string | undefined, token: string): boolean {
    if (id === undefined) return false;
    const session = [...this.sessions].find(([known]) => tokenMatches(id, known))?.[1];
    if (!session) return false;
    if (session.expiresAt <= Date.now() || session.tokenDigest !== digest(token)) {
      this.sessions.delete(id);
      return false;
    }
    return true;
  }

  get ttlSeconds(): number {
    return Math.floor(this.ttlMs / 1000);
  }
}

function digest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}
