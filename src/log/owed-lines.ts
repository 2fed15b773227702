/**
 * Audit lines that events have begun and not yet written: an exchange owes its line from the
 * moment it opens until it is written, however it ends. A drain waits for them, so what it
 * cuts is still written (SIGTERM loses no line).
 */
export class OwedLines {
  private count = 0;
  private waiters: (() => void)[] = [];

  /** One more line owed; the function returned pays it (once, however often it is called). */
  add(): () => void {
    this.count++;
    let paid = false;
    return () => {
      if (paid) return;
      paid = true;
      this.count--;
      if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
    };
  }

  /** Resolves once every owed line is written, or after `ms` (a line that never comes must not hold the exit). */
  settled(ms: number): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.waiters.push(done);
    });
  }
}
