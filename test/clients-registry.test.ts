import { describe, expect, it } from "vitest";
import { ClientRegistry } from "../src/clients/registry.js";
import { MemoryStore } from "../src/clients/memory-store.js";
import { Scrubber } from "../src/log/scrub.js";

describe("ClientRegistry", () => {
  it("refuses a client from its expires_at on, by the registry's clock, before any timer fires", async () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const registry = new ClientRegistry(new MemoryStore(), new Scrubber(), () => now);
    await registry.start();
    const { client, token } = await registry.create({ name: "sbx", ttlMs: 60_000, rules: [], credentials: [] });
    expect(client.expires_at).toBe("2026-01-01T00:01:00.000Z");
    expect(registry.checkBearer(token)).toBe("sbx");
    expect(registry.checkBasic("sbx", token)).toBe(true);
    expect(registry.checkBasic("sbx", `${token}x`)).toBe(false);
    expect(registry.checkBasic("nobody", token)).toBeUndefined();
    now += 59_999;
    expect(registry.checkBearer(token)).toBe("sbx");
    now += 1;
    expect(registry.checkBearer(token)).toBeUndefined();
    expect(registry.checkBasic("sbx", token)).toBe(false);
    expect(registry.has("sbx")).toBe(false);
    expect(registry.list()).toEqual([]);
    await registry.close();
  });

  it("emits removed once on revocation, and scrubs only live tokens from text", async () => {
    const scrubber = new Scrubber();
    const registry = new ClientRegistry(new MemoryStore(), scrubber);
    await registry.start();
    const { token } = await registry.create({ name: "sbx", ttlMs: 60_000, rules: [], credentials: [] });
    const lookalike = "A".repeat(43);
    expect(scrubber.scrub(`path=/x?t=${token}&u=${lookalike}`)).toBe(`path=/x?t=[REDACTED]&u=${lookalike}`);
    // Part of a longer run is not the token.
    expect(scrubber.scrub(`${token}Z`)).toBe(`${token}Z`);
    const removed: string[] = [];
    registry.on("removed", (name, reason) => removed.push(`${name}:${reason}`));
    expect(await registry.revoke("sbx")).toBe(true);
    expect(await registry.revoke("sbx")).toBe(false);
    expect(removed).toEqual(["sbx:revoked"]);
    expect(registry.checkBearer(token)).toBeUndefined();
    await registry.close();
  });
});
