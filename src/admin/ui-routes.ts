import { randomBytes } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AdminRoute } from "./server.js";
import type { LiveView } from "./live-view.js";
import { bearerToken, cookieValue, tokenMatches } from "./token-check.js";
import { uiPage } from "./ui-page.js";
import { UiSessions } from "./ui-sessions.js";

const COOKIE = "portcullis_ui";

export interface UiRouteOptions {
  live: LiveView;
  /** The admin token's current value; undefined when none is configured (the view is then open, like /metrics). */
  adminToken: () => Promise<string | undefined>;
  /** This admin listener's own base URL, to read /budgets from when a budgets feature serves it. */
  selfUrl: () => string | undefined;
}

type Access = { ok: true; token?: string } | { ok: false; status: number; why: string };

async function access(req: IncomingMessage, options: UiRouteOptions, sessions: UiSessions): Promise<Access> {
  let token: string | undefined;
  try {
    token = await options.adminToken();
  } catch {
    // Fail closed: a token that is configured but cannot be read now lets nobody in.
    return { ok: false, status: 503, why: "admin.token cannot be resolved" };
  }
  if (token === undefined) return { ok: true };
  if (tokenMatches(bearerToken(req), token) || sessions.valid(cookieValue(req, COOKIE), token)) return { ok: true, token };
  return { ok: false, status: 401, why: "this view needs the admin token: open /ui?token=ADMIN_TOKEN once, or send Authorization: Bearer ADMIN_TOKEN" };
}

function refuse(res: ServerResponse, denied: { status: number; why: string }): void {
  res.writeHead(denied.status, { "Content-Type": "text/plain; charset=utf-8", "WWW-Authenticate": 'Bearer realm="portcullis admin"', "Cache-Control": "no-store" }).end(`${denied.why}\n`);
}

function sessionCookie(id: string, maxAge: number): string {
  return `${COOKIE}=${id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=${maxAge}`;
}

async function servePage(req: IncomingMessage, res: ServerResponse, options: UiRouteOptions, sessions: UiSessions): Promise<void> {
  const query = new URL(req.url ?? "/", "http://admin").searchParams.get("token");
  let token: string | undefined;
  try {
    token = await options.adminToken();
  } catch {
    return refuse(res, { status: 503, why: "admin.token cannot be resolved" });
  }
  if (query !== null && token !== undefined) {
    if (!tokenMatches(query, token)) return refuse(res, { status: 401, why: "wrong admin token" });
    // Trade the token for a session cookie and take it out of the address bar.
    res.writeHead(303, { Location: "/ui", "Set-Cookie": sessionCookie(sessions.mint(token), sessions.ttlSeconds), "Cache-Control": "no-store", "Referrer-Policy": "no-referrer" }).end();
    return;
  }
  const granted = await access(req, options, sessions);
  if (!granted.ok) return refuse(res, granted);
  const nonce = randomBytes(16).toString("base64");
  const headers: Record<string, string> = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
  };
  // A Bearer-authenticated visit also gets a session, so the page's event stream works.
  if (granted.token !== undefined && !sessions.valid(cookieValue(req, COOKIE), granted.token)) headers["Set-Cookie"] = sessionCookie(sessions.mint(granted.token), sessions.ttlSeconds);
  res.writeHead(200, headers).end(req.method === "HEAD" ? undefined : uiPage(nonce));
}

/** Relays this listener's own /budgets (served by the budgets feature when configured), with the admin token. */
async function serveBudgets(res: ServerResponse, options: UiRouteOptions, token: string | undefined): Promise<void> {
  const base = options.selfUrl();
  const none = () => void res.writeHead(404, { "Content-Type": "application/json", "Cache-Control": "no-store" }).end('{"budgets":null}');
  if (!base) return none();
  try {
    const body = await getOk(`${base}/budgets`, token ? { authorization: `Bearer ${token}` } : {});
    if (body === undefined) return none();
    JSON.parse(body);
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" }).end(body);
  } catch {
    none();
  }
}

/** The body of a 200 answer (at most 1 MiB, within 2 s), undefined for any other status. */
function getOk(url: string, headers: Record<string, string>): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, timeout: 2_000 }, (answer) => {
      if (answer.statusCode !== 200) {
        answer.resume();
        return resolve(undefined);
      }
      let body = "";
      answer.setEncoding("utf8");
      answer.on("data", (chunk: string) => {
        body += chunk;
        if (body.length > 1024 * 1024) req.destroy(new Error("too large"));
      });
      answer.on("end", () => resolve(body));
      answer.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

/** /ui (the page), /ui/events (its server-sent events), /ui/budgets. */
export function uiRoutes(options: UiRouteOptions): AdminRoute[] {
  const sessions = new UiSessions();
  return [
    { path: "/ui", methods: ["GET", "HEAD"], handle: (req, res) => servePage(req, res, options, sessions) },
    {
      path: "/ui/",
      methods: ["GET"],
      handle: async (req, res, rest) => {
        if (rest !== "events" && rest !== "budgets") return void res.writeHead(404, { "Content-Type": "text/plain" }).end("not found: try /ui, /ui/events, /ui/budgets\n");
        // The token is taken from a header or the session cookie only: a token in the stream's
        // URL would sit in proxies' and browsers' logs.
        const granted = await access(req, options, sessions);
        if (!granted.ok) return refuse(res, granted);
        if (rest === "events") return options.live.attach(req, res);
        return serveBudgets(res, options, granted.token);
      },
    },
  ];
}
