import type { ClientStore } from "./store.js";
import { expiresAtMs, type RegisteredClient } from "./registered-client.js";

/** admin.state: memory — this process only; lost on restart. */
export class MemoryStore implements ClientStore {
  readonly description = "memory";
  readonly shared = false;
  private readonly clients = new Map<string, RegisteredClient>();

  async load(): Promise<RegisteredClient[]> {
    return [...this.clients.values()];
  }

  async create(client: RegisteredClient): Promise<boolean> {
    const existing = this.clients.get(client.name);
    if (existing && expiresAtMs(existing) > Date.now()) return false;
    this.clients.set(client.name, client);
    return true;
  }

  async remove(name: string): Promise<boolean> {
    return this.clients.delete(name);
  }

  watch(): void {}

  async close(): Promise<void> {}
}
