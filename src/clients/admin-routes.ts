import type { IncomingMessage, ServerResponse } from "node:http";
import type { AdminRoute } from "../admin/server.js";
import type { Policy } from "../policy/schema.js";
import { adminAuthorized } from "./admin-auth.js";
import { BadRequest, parseCreateRequest } from "./create-request.js";
import { publicView } from "./registered-client.js";
import { NameTaken, type ClientRegistry } from "./registry.js";

const MAX_BODY_BYTES = 1024 * 1024;

export interface ClientsApi {
  registry: ClientRegistry;
  /** The running policy (file clients and credentials, admin.max_ttl). */
  policy(): Policy;
  /** The admin token's value; throws when its secret cannot be resolved. */
  adminToken(): Promise<string>;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-store", ...headers }).end(text);
}

/** The SPEC section 5 body shape. */
function fail(res: ServerResponse, status: number, type: string, message: string, headers: Record<string, string> = {}): void {
  json(res, status, { error: { type, message } }, { "X-Portcullis-Error": type, ...headers });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new BadRequest(`body over ${MAX_BODY_BYTES / 1024} KiB`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.once("error", reject);
  });
}

/** Answers 401 (or 503) itself and returns false unless the request carries the admin token. */
async function authorize(api: ClientsApi, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  let token: string;
  try {
    token = await api.adminToken();
  } catch {
    // Fail closed, and never say more about the secret than that it is missing.
    fail(res, 503, "admin_unavailable", "admin.token cannot be resolved; the clients API is unavailable");
    return false;
  }
  if (adminAuthorized(req.headers.authorization, token)) return true;
  const missing = req.headers.authorization === undefined;
  fail(res, 401, "unauthorized", missing ? "Authorization: Bearer ADMIN_TOKEN is required" : "wrong admin token", {
    "WWW-Authenticate": `Bearer realm="portcullis admin"${missing ? "" : ', error="invalid_token"'}`,
  });
  return false;
}

async function create(api: ClientsApi, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let request;
  try {
    const text = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (error) {
      throw new BadRequest(`body is not valid JSON (${(error as Error).message})`);
    }
    request = parseCreateRequest(body, api.policy(), (name) => api.registry.has(name));
  } catch (error) {
    if (error instanceof BadRequest) return fail(res, 400, "bad_request", error.message);
    throw error;
  }
  try {
    const { client, token } = await api.registry.create(request);
    json(res, 201, { name: client.name, token, expires_at: client.expires_at }, { Location: `/v1/clients/${encodeURIComponent(client.name)}` });
  } catch (error) {
    if (error instanceof NameTaken) return fail(res, 400, "bad_request", `name: ${error.message}`);
    fail(res, 503, "admin_unavailable", `the client registry (${api.registry.store.description}) cannot be written: ${(error as Error).message}`);
  }
}

/** /v1/clients (POST create, GET list) and /v1/clients/NAME (GET, DELETE), all behind the admin token. */
export function clientRoutes(api: ClientsApi): AdminRoute[] {
  return [
    {
      path: "/v1/clients",
      methods: ["GET", "POST"],
      async handle(req, res) {
        if (!(await authorize(api, req, res))) return;
        if (req.method === "POST") return create(api, req, res);
        json(res, 200, { clients: api.registry.list().map(publicView) });
      },
    },
    {
      path: "/v1/clients/",
      methods: ["GET", "DELETE"],
      async handle(req, res, rest) {
        if (!(await authorize(api, req, res))) return;
        let name: string;
        try {
          name = decodeURIComponent(rest);
        } catch {
          return fail(res, 400, "bad_request", "malformed client name in the path");
        }
        if (req.method === "GET") {
          const client = api.registry.get(name);
          if (!client) return fail(res, 404, "not_found", `no registered client named "${name}"`);
          return json(res, 200, publicView(client));
        }
        try {
          if (!(await api.registry.revoke(name))) return fail(res, 404, "not_found", `no registered client named "${name}"`);
        } catch (error) {
          return fail(res, 503, "admin_unavailable", `the client registry (${api.registry.store.description}) cannot be written: ${(error as Error).message}`);
        }
        res.writeHead(204).end();
      },
    },
  ];
}
