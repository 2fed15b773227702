import type { Worker } from "node:cluster";
import { randomUUID } from "node:crypto";
import type { MemoryBudgetStore } from "./memory-store.js";
import { type Admission, BudgetStoreUnavailable, type BudgetStore, type Counter, type CounterCheck, type CounterKey } from "./store.js";

const ASK = "portcullis:budget";
const ANSWER = "portcullis:budget-answer";
/** A primary that does not answer in this time is treated as unreachable (fail closed). */
const IPC_TIMEOUT_MS = 2000;

type Question = { op: "admit"; checks: CounterCheck[] } | { op: "peek"; checks: CounterCheck[] } | { op: "charge"; keys: CounterKey[]; tokens: number } | { op: "counters" };
type Ask = Question & { type: typeof ASK; id: string };

interface AnswerMessage {
  type: typeof ANSWER;
  id: string;
  result?: Admission | Counter[] | CounterCheck | null;
  error?: string;
}

/**
 * A worker's view of the memory store, which lives in the cluster primary: every admit and
 * charge is a message to the primary, so all workers share one set of counters.
 */
export class IpcBudgetStore implements BudgetStore {
  private readonly pending = new Map<string, { resolve: (value: AnswerMessage) => void; timer: NodeJS.Timeout }>();
  private readonly onMessage = (message: AnswerMessage) => {
    if (message?.type !== ANSWER) return;
    const waiting = this.pending.get(message.id);
    if (!waiting) return;
    this.pending.delete(message.id);
    clearTimeout(waiting.timer);
    waiting.resolve(message);
  };

  constructor(private readonly send: (message: Ask) => boolean = (message) => process.send?.(message) ?? false) {
    process.on("message", this.onMessage);
  }

  private ask<T>(question: Question): Promise<T> {
    const id = randomUUID();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new BudgetStoreUnavailable("budget store (the primary process) did not answer"));
      }, IPC_TIMEOUT_MS);
      timer.unref();
      this.pending.set(id, {
        timer,
        resolve: (answer) => (answer.error !== undefined ? reject(new BudgetStoreUnavailable(answer.error)) : resolve(answer.result as T)),
      });
      try {
        this.send({ type: ASK, id, ...question });
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new BudgetStoreUnavailable(`budget store (the primary process) cannot be reached: ${(error as Error).message}`));
      }
    });
  }

  admit(checks: readonly CounterCheck[]): Promise<Admission> {
    return this.ask({ op: "admit", checks: [...checks] });
  }

  async peek(checks: readonly CounterCheck[]): Promise<CounterCheck | undefined> {
    return (await this.ask<CounterCheck | null>({ op: "peek", checks: [...checks] })) ?? undefined;
  }

  async charge(keys: readonly CounterKey[], tokens: number): Promise<void> {
    await this.ask({ op: "charge", keys: [...keys], tokens });
  }

  counters(): Promise<Counter[]> {
    return this.ask({ op: "counters" });
  }

  async close(): Promise<void> {
    process.off("message", this.onMessage);
  }
}

/** Primary side: answers a worker's budget messages from the one memory store. */
export function serveBudgetsTo(worker: Worker, store: MemoryBudgetStore): void {
  worker.on("message", (message: Ask) => {
    if (message?.type !== ASK) return;
    let result: Admission | Counter[] | CounterCheck | null;
    if (message.op === "admit") result = store.admitNow(message.checks);
    else if (message.op === "peek") result = store.peekNow(message.checks) ?? null;
    else if (message.op === "charge") (store.chargeNow(message.keys, message.tokens), (result = null));
    else result = store.snapshot();
    if (worker.isConnected()) worker.send({ type: ANSWER, id: message.id, result } satisfies AnswerMessage);
  });
}
