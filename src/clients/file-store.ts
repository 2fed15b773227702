import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { mkdirSync, watch, type FSWatcher } from "node:fs";
import type { ClientStore, StoreChange } from "./store.js";
import { expiresAtMs, isRegisteredClient, type RegisteredClient } from "./registered-client.js";

interface StateFile {
  version: 1;
  clients: RegisteredClient[];
}

const DEBOUNCE_MS = 50;

/**
 * admin.state: a file path. The whole registry as JSON (token digests, never tokens), rewritten
 * atomically on every change: a temporary file in the same folder, mode 0600, fsynced, then
 * renamed over the old one, so a reader (a restart, a worker) sees the old file or the new one,
 * never half of one. Meant for one writer: one process, or the primary of --workers, whose
 * workers watch the file for changes.
 */
export class FileStore implements ClientStore {
  readonly shared = true;
  readonly description: string;
  private writes: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The text this process last wrote: its own writes are not news to it. */
  private lastWritten: string | undefined;

  constructor(private readonly file: string) {
    this.description = `file ${file}`;
  }

  async load(): Promise<RegisteredClient[]> {
    return this.live(await this.read());
  }

  create(client: RegisteredClient): Promise<boolean> {
    return this.update((clients) => {
      if (clients.some((existing) => existing.name === client.name)) return undefined;
      return [...clients, client];
    });
  }

  remove(name: string): Promise<boolean> {
    return this.update((clients) => {
      const rest = clients.filter((client) => client.name !== name);
      return rest.length === clients.length ? undefined : rest;
    });
  }

  watch(onChange: (change: StoreChange) => void): void {
    const reread = () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        readFile(this.file, "utf8").then(
          (text) => {
            if (text === this.lastWritten) return;
            onChange({ type: "reset", clients: this.live(this.parse(text)) });
          },
          () => undefined,
        );
      }, DEBOUNCE_MS);
    };
    // The folder is watched: a rename replaces the file, and a watch on the old inode would go quiet.
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    this.watcher = watch(dirname(this.file), { persistent: false }, (_event, name) => {
      if (name === null || name === basename(this.file)) reread();
    });
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.watcher?.close();
    await this.writes;
  }

  private live(clients: RegisteredClient[]): RegisteredClient[] {
    const now = Date.now();
    return clients.filter((client) => expiresAtMs(client) > now);
  }

  private async read(): Promise<RegisteredClient[]> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new Error(`admin.state: cannot read ${this.file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
    return this.parse(text);
  }

  private parse(text: string): RegisteredClient[] {
    let parsed: Partial<StateFile>;
    try {
      parsed = JSON.parse(text) as Partial<StateFile>;
    } catch {
      throw new Error(`admin.state: ${this.file} is not valid JSON`);
    }
    if (parsed.version !== 1 || !Array.isArray(parsed.clients) || !parsed.clients.every(isRegisteredClient)) {
      throw new Error(`admin.state: ${this.file} is not a portcullis client registry (version 1)`);
    }
    return parsed.clients;
  }

  /** Read, change, write: one at a time, so two requests never write over each other. */
  private update(change: (clients: RegisteredClient[]) => RegisteredClient[] | undefined): Promise<boolean> {
    const run = this.writes.then(async () => {
      const next = change(this.live(await this.read()));
      if (!next) return false;
      await this.write({ version: 1, clients: next });
      return true;
    });
    this.writes = run.catch(() => undefined);
    return run;
  }

  private async write(state: StateFile): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const text = `${JSON.stringify(state, null, 2)}\n`;
    const temp = join(dirname(this.file), `.${basename(this.file)}.${randomBytes(6).toString("hex")}.tmp`);
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      this.lastWritten = text;
      await rename(temp, this.file);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    }
  }
}
