import type { RegisteredClient } from "./registered-client.js";

/** A change another process (a worker's primary, another replica) made to the shared state. */
export type StoreChange =
  | { type: "created"; client: RegisteredClient }
  | { type: "removed"; name: string }
  /** Everything as it is now (after a reconnect, or a file rewritten by someone else). */
  | { type: "reset"; clients: RegisteredClient[] };

/**
 * Where registered clients are kept (admin.state). Every process keeps its own view in memory
 * (the ClientRegistry) and the store tells it what the others changed.
 */
export interface ClientStore {
  /** "memory", "file FILE", "redis URL": for messages */
  readonly description: string;
  /** Whether other processes can share it (--workers, replicas). */
  readonly shared: boolean;
  /** The clients that have not expired. */
  load(): Promise<RegisteredClient[]>;
  /** Adds a client unless one of that name exists; false when it does. */
  create(client: RegisteredClient): Promise<boolean>;
  /** false when there was no such client */
  remove(name: string): Promise<boolean>;
  /** false while changes made elsewhere may be going unheard (a lost connection): registered clients are refused then. */
  healthy?(): boolean;
  /** Starts reporting other processes' changes. */
  watch(onChange: (change: StoreChange) => void): void;
  close(): Promise<void>;
}
