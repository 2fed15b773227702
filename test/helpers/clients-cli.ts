import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { startCli, type RunningProxy } from "./cli.js";
import { callApi } from "./clients-api.js";

// portcullis CLI processes with the clients API on, for the admin.state tests.
export const ADMIN_TOKEN = `admin-${randomBytes(16).toString("hex")}`;
export const env = { PCX_STATE_ADMIN: ADMIN_TOKEN };
export const running: RunningProxy[] = [];

export const allowRule = { name: "own", action: "allow", hosts: ["reg.test"], ports: [443] };

export function writePolicy(dir: string, state: string): string {
  const file = join(dir, "policy.yaml");
  writeFileSync(
    file,
    `version: 1
ca: { dir: ${JSON.stringify(join(dir, "certs"))} }
log: { audit: ${JSON.stringify(join(dir, "audit.log"))} }
network: { default: deny }
admin:
  listen: "127.0.0.1:0"
  token: { env: PCX_STATE_ADMIN }
  state: ${JSON.stringify(state)}
`,
  );
  return file;
}

export async function start(policy: string, extra: string[] = []): Promise<{ proxy: RunningProxy; admin: string; ca: string }> {
  const proxy = await startCli(["--policy", policy, "--listen", "127.0.0.1:0", ...extra], { env });
  running.push(proxy);
  const line = await proxy.waitForOutput(/portcullis admin on 127\.0\.0\.1:\d+/);
  const ca = readFileSync(join(policy, "..", "certs", "ca.pem"), "utf8");
  return { proxy, admin: `http://${line.split(" ").pop()}`, ca };
}

export async function stop(proxy: RunningProxy): Promise<void> {
  proxy.child.kill("SIGTERM");
  expect(await proxy.exited).toBe(0);
  running.splice(running.indexOf(proxy), 1);
}

export async function register(admin: string, name: string, ttl = "10m"): Promise<string> {
  const answer = await callApi(admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name, ttl, rules: [allowRule] } });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer.body.token as string;
}

/** Asks until the answer is the expected one (another process learns of a change a moment later). */
export async function eventually(ask: () => Promise<string>, expected: RegExp, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await ask();
    if (expected.test(answer) || Date.now() > deadline) return answer;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
