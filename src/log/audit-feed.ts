import type { AuditRecord } from "../core/audit-record.js";

/** A finished audit record as its scrubbed line says it: `time` (ms since the epoch) is when it ended. */
export type PublishedRecord = AuditRecord & { time: number; level: number };

export type AuditSubscriber = (record: PublishedRecord) => void;

/**
 * The one place finished audit records are handed to whoever watches them (traces, the live
 * view, a worker's link to its primary). Records come from the audit line after scrubbing, so
 * a subscriber sees exactly the fields the log holds and never a secret.
 */
export class AuditFeed {
  private subscribers: readonly AuditSubscriber[] = [];

  /** Lets the writer skip all work (parsing the line) while nobody listens. */
  get active(): boolean {
    return this.subscribers.length > 0;
  }

  /** Returns the function that unsubscribes. */
  subscribe(subscriber: AuditSubscriber): () => void {
    this.subscribers = [...this.subscribers, subscriber];
    return () => {
      this.subscribers = this.subscribers.filter((s) => s !== subscriber);
    };
  }

  publish(record: PublishedRecord): void {
    for (const subscriber of this.subscribers) {
      try {
        subscriber(record);
      } catch {
        // A watcher's fault must not lose the next watcher its record, nor fail the exchange.
      }
    }
  }
}
