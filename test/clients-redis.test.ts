import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt } from "./helpers/cli.js";
import { bearer, callApi, closed, connectStatus, openTunnel } from "./helpers/clients-api.js";
import { ADMIN_TOKEN, eventually, register, running, start, stop, writePolicy } from "./helpers/clients-cli.js";
import { tempDir } from "./helpers/pki.js";
import { startRedis, type TestRedis } from "./helpers/redis.js";

let redis: TestRedis | undefined;

beforeAll(async () => {
  assertBuilt();
  redis = await startRedis();
});

afterAll(async () => {
  for (const proxy of running) proxy.child.kill("SIGKILL");
  await Promise.all(running.map((proxy) => proxy.exited));
  await redis?.stop();
});

describe("admin.state: redis", () => {
  it("is shared by two portcullis processes: created on one, used on the other; revoked on one, refused and closed on the other", { timeout: 40_000 }, async () => {
    const dir = tempDir("clients-redis");
    const policy = writePolicy(dir, `${redis!.url}/3`);
    // One after the other: the first creates the CA both use.
    const a = await start(policy);
    const b = await start(policy);
    const token = await register(a.admin, "sbx-shared");
    expect(await connectStatus(b.proxy.port, "reg.test:443", bearer(token))).toBe("HTTP/1.1 200");
    const listedOnB = await callApi(b.admin, "GET", "/v1/clients/sbx-shared", { token: ADMIN_TOKEN });
    expect(listedOnB.status).toBe(200);
    // A name is taken once, whichever replica is asked.
    expect((await callApi(b.admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name: "sbx-shared", ttl: "1m" } })).status).toBe(400);

    const tunnel = await openTunnel(b.proxy.port, "reg.test", 443, bearer(token), b.ca);
    const tunnelClosed = closed(tunnel);
    expect((await callApi(a.admin, "DELETE", "/v1/clients/sbx-shared", { token: ADMIN_TOKEN })).status).toBe(204);
    await tunnelClosed;
    expect(await eventually(() => connectStatus(b.proxy.port, "reg.test:443", bearer(token)), /407/)).toMatch(/^HTTP\/1.1 407/);
    expect(await connectStatus(a.proxy.port, "reg.test:443", bearer(token))).toMatch(/^HTTP\/1.1 407/);

    // A third process started later reads what is there, then follows the changes.
    const before = await register(b.admin, "sbx-before");
    const c = await start(policy);
    expect(await connectStatus(c.proxy.port, "reg.test:443", bearer(before))).toBe("HTTP/1.1 200");
    // Expiry: Redis forgets the key, and every process closes the client's tunnels at expires_at.
    const shortLived = await register(b.admin, "sbx-short", "2s");
    const shortTunnel = await openTunnel(c.proxy.port, "reg.test", 443, bearer(shortLived), c.ca);
    await closed(shortTunnel);
    expect(await connectStatus(c.proxy.port, "reg.test:443", bearer(shortLived))).toMatch(/^HTTP\/1.1 407/);
    expect((await callApi(a.admin, "GET", "/v1/clients/sbx-short", { token: ADMIN_TOKEN })).status).toBe(404);
    await Promise.all([stop(a.proxy), stop(b.proxy), stop(c.proxy)]);
  });

  it("refuses registered clients while Redis is away, and reads the registry again when it is back", { timeout: 40_000 }, async () => {
    const dir = tempDir("clients-redis-outage");
    const policy = writePolicy(dir, `${redis!.url}/4`);
    const d = await start(policy);
    const token = await register(d.admin, "sbx-outage");
    expect(await connectStatus(d.proxy.port, "reg.test:443", bearer(token))).toBe("HTTP/1.1 200");
    await redis!.kill();
    // A revocation made elsewhere now would go unheard: fail closed.
    expect(await eventually(() => connectStatus(d.proxy.port, "reg.test:443", bearer(token)), /407/)).toMatch(/^HTTP\/1.1 407/);
    expect((await callApi(d.admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name: "sbx-while-down", ttl: "1m" } })).status).toBe(503);
    // The new Redis has nothing (no persistence): once reconnected the client is gone for good, and new ones work.
    await redis!.restart();
    let fresh: string | undefined;
    const registerWhenBack = async () => {
      const answer = await callApi(d.admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name: "sbx-after", ttl: "1m", rules: [{ name: "own", action: "allow", hosts: ["reg.test"], ports: [443] }] } });
      if (answer.status === 201) fresh = answer.body.token;
      return String(answer.status);
    };
    expect(await eventually(registerWhenBack, /201/)).toBe("201");
    expect(await eventually(() => connectStatus(d.proxy.port, "reg.test:443", bearer(fresh!)), /200/)).toBe("HTTP/1.1 200");
    expect(await connectStatus(d.proxy.port, "reg.test:443", bearer(token))).toMatch(/^HTTP\/1.1 407/);
    await stop(d.proxy);
  });

  it("refuses to start when the Redis it names cannot be reached", { timeout: 20_000 }, async () => {
    const dir = tempDir("clients-redis-down");
    // A port nothing listens on: the one the test Redis would have, had it never started.
    const policy = writePolicy(dir, "redis://127.0.0.1:1");
    await expect(start(policy)).rejects.toThrow(/admin.state redis:\/\/127.0.0.1:1: cannot connect to Redis/);
  });
});
