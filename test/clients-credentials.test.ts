import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { parsePolicy } from "../src/policy/load.js";
import { callApi } from "./helpers/clients-api.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

// Found by a security review: a registered client's credentials list must hold for signing
// credentials too, and a registration must never take on a file client's identity.
const ADMIN_TOKEN = `admin-${randomBytes(16).toString("hex")}`;
const REAL_AKID = "AKIAREALKEY000000001";
const FILE_TOKEN = `file-${randomBytes(16).toString("hex")}`;
Object.assign(process.env, {
  PCX_CC_ADMIN: ADMIN_TOKEN,
  PCX_CC_AKID: REAL_AKID,
  PCX_CC_SECRET: "real/Secret+Key/0123456789abcdefghijklmn",
  PCX_CC_H: "header-secret-value-123",
  PCX_CC_FILE: FILE_TOKEN,
});

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let admin: string;
const seen: { authorization?: string; header?: string }[] = [];

function policy(fileClient: boolean): string {
  return `
version: 1
upstream:
  trust: [${JSON.stringify(pki.caFile)}]
  resolve: { s3.us-east-1.amazonaws.com: 127.0.0.1 }
secrets:
  h: { env: PCX_CC_H }
${fileClient ? "clients:\n  - { name: sbx, token: { env: PCX_CC_FILE } }\n" : ""}network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
    - { name: file-rule, action: allow, hosts: [s3.us-east-1.amazonaws.com], methods: [DELETE] }
credentials:
  - { name: aws, hosts: [s3.us-east-1.amazonaws.com], aws_sigv4: { access_key_id: { env: PCX_CC_AKID }, secret_access_key: { env: PCX_CC_SECRET } } }
  - { name: hdr, hosts: [s3.us-east-1.amazonaws.com], header: { name: X-H, value: "\${secrets.h}" } }
admin:
  token: { env: PCX_CC_ADMIN }
  max_ttl: 1h
`;
}

function record(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  seen.push({ authorization: req.headers.authorization, header: req.headers["x-h"] as string | undefined });
  res.writeHead(200, { "content-length": "2" }).end("ok");
}

async function register(name: string, credentials: string[]): Promise<string> {
  const rules = [{ name: "s3", action: "allow", hosts: ["s3.us-east-1.amazonaws.com"], ports: [upstream.port] }];
  const created = await callApi(admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name, ttl: "10m", rules, credentials } });
  expect(created.status).toBe(201);
  return created.body.token as string;
}

/** A GET signed by the sandbox with a placeholder key, as any AWS SDK would send it. */
async function s3Get(token: string): Promise<number> {
  const agent = new ProxyAgent({ uri: proxy.url, token: `Bearer ${token}`, requestTls: { ca: proxy.caPem } });
  try {
    const res = await request(`https://s3.us-east-1.amazonaws.com:${upstream.port}/bucket/key`, {
      dispatcher: agent,
      headers: {
        authorization: "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER00000/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        "x-amz-date": "20260101T000000Z",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
      },
    });
    await res.body.text();
    return res.statusCode;
  } catch (error) {
    return /\b407\b/.test(String((error as Error).message)) ? 407 : Promise.reject(error);
  } finally {
    await agent.close();
  }
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream(record, pki);
  proxy = await startProxy(policy(false), { adminListen: "127.0.0.1:0" });
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}`;
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

describe("a registered client's credentials", () => {
  it("include an aws_sigv4 credential only when it was given it", async () => {
    expect(await s3Get(await register("nocreds", []))).toBe(200);
    expect(seen.at(-1)!.authorization).not.toContain(REAL_AKID);
    expect(seen.at(-1)!.header).toBeUndefined();

    expect(await s3Get(await register("signer", ["aws"]))).toBe(200);
    expect(seen.at(-1)!.authorization).toContain(`Credential=${REAL_AKID}/`);
    expect(seen.at(-1)!.header).toBeUndefined();
  });

  it("never become a file client's when the policy later defines one of the same name", async () => {
    const token = await register("sbx", []);
    expect(await s3Get(token)).toBe(200);
    await proxy.proxy.reload(parsePolicy(`${policy(true)}\nca: { dir: ${JSON.stringify(proxy.caDir)} }\n`, "p.yaml"));
    const before = seen.length;
    expect(await s3Get(token)).toBe(407);
    expect(seen.length).toBe(before);
    await proxy.diagnostics.waitFor((line) => /registered client revoked: the policy now defines a client of the same name/.test(String(line.msg)));
    const listed = await callApi(admin, "GET", "/v1/clients", { token: ADMIN_TOKEN });
    expect(JSON.stringify(listed.body)).not.toContain('"sbx"');
  });
});

describe("/budgets with admin.token set", () => {
  it("needs the admin token like the rest of the admin API", async () => {
    const without = await request(`${admin}/budgets`);
    await without.body.text();
    expect(without.statusCode).toBe(401);
    const wrong = await request(`${admin}/budgets`, { headers: { authorization: "Bearer not-the-token" } });
    await wrong.body.text();
    expect(wrong.statusCode).toBe(401);
    const right = await request(`${admin}/budgets`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(right.statusCode).toBe(404); // authorised; this policy has no budgets
    expect(await right.body.json()).toMatchObject({ error: { type: "not_found" } });
  });
});
