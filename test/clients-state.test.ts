import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, runCli } from "./helpers/cli.js";
import { bearer, callApi, closed, connectStatus, openTunnel } from "./helpers/clients-api.js";
import { ADMIN_TOKEN, env, eventually, register, running, start, stop, writePolicy } from "./helpers/clients-cli.js";
import { tempDir } from "./helpers/pki.js";

beforeAll(() => assertBuilt());

afterAll(async () => {
  for (const proxy of running) proxy.child.kill("SIGKILL");
  await Promise.all(running.map((proxy) => proxy.exited));
});

describe("admin.state: a file", () => {
  it("keeps registered clients across a restart, with token digests only, mode 0600", { timeout: 40_000 }, async () => {
    const dir = tempDir("clients-file");
    const stateFile = join(dir, "state", "clients.json");
    const policy = writePolicy(dir, stateFile);
    const first = await start(policy);
    const token = await register(first.admin, "sbx-file");
    const revoked = await register(first.admin, "sbx-gone");
    expect((await callApi(first.admin, "DELETE", "/v1/clients/sbx-gone", { token: ADMIN_TOKEN })).status).toBe(204);
    expect(await connectStatus(first.proxy.port, "reg.test:443", bearer(token))).toBe("HTTP/1.1 200");
    await stop(first.proxy);

    const text = readFileSync(stateFile, "utf8");
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(text).not.toContain(token);
    expect(JSON.parse(text).clients.map((client: { name: string }) => client.name)).toEqual(["sbx-file"]);

    const second = await start(policy);
    expect(await connectStatus(second.proxy.port, "reg.test:443", bearer(token))).toBe("HTTP/1.1 200");
    expect(await connectStatus(second.proxy.port, "reg.test:443", bearer(revoked))).toMatch(/^HTTP\/1.1 407/);
    const list = await callApi(second.admin, "GET", "/v1/clients", { token: ADMIN_TOKEN });
    expect(list.body.clients.map((client: { name: string }) => client.name)).toEqual(["sbx-file"]);
    await stop(second.proxy);
  });

  it("is shared by --workers: created and revoked on the primary, seen by every worker", { timeout: 40_000 }, async () => {
    const dir = tempDir("clients-workers");
    const policy = writePolicy(dir, join(dir, "clients.json"));
    const { proxy, admin, ca } = await start(policy, ["--workers", "2"]);
    const token = await register(admin, "sbx-workers");
    // Each new connection may land on either worker: every one of them must know the client.
    for (let i = 0; i < 6; i++) expect(await eventually(() => connectStatus(proxy.port, "reg.test:443", bearer(token)), /200/)).toBe("HTTP/1.1 200");
    const tunnels = await Promise.all([0, 1, 2, 3].map(() => openTunnel(proxy.port, "reg.test", 443, bearer(token), ca)));
    const allClosed = Promise.all(tunnels.map(closed));
    expect((await callApi(admin, "DELETE", "/v1/clients/sbx-workers", { token: ADMIN_TOKEN })).status).toBe(204);
    await allClosed;
    for (let i = 0; i < 6; i++) expect(await eventually(() => connectStatus(proxy.port, "reg.test:443", bearer(token)), /407/)).toMatch(/^HTTP\/1.1 407/);
    await stop(proxy);
  });

  it("refuses --workers with admin.state memory, saying what to use", () => {
    const dir = tempDir("clients-memory");
    const policy = writePolicy(dir, "memory");
    const result = runCli(["start", "--policy", policy, "--listen", "127.0.0.1:0", "--workers", "2"], { env });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("admin.state memory is per process");
    expect(result.stderr).toContain("redis://");
  });
});
