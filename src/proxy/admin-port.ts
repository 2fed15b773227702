import cluster, { type Worker } from "node:cluster";
import type { SelfAddress } from "../policy/destinations.js";

/**
 * With --workers the admin listener lives in the primary, yet the destination guard that keeps
 * sandboxes off portcullis' own listeners runs in each worker: the primary tells every worker
 * the admin port (in the environment when it is fixed, over IPC once it listens).
 */
const ADMIN_PORT = "portcullis:admin-port";
const ADMIN_PORT_ENV = "PORTCULLIS_ADMIN_PORT";

/** The environment a worker is forked with: the admin port when the policy fixes it. */
export function adminPortEnvironment(port: number | undefined): Record<string, string> {
  return port ? { [ADMIN_PORT_ENV]: String(port) } : {};
}

export function tellAdminPort(worker: Worker, port: number): void {
  if (worker.isConnected()) worker.send({ type: ADMIN_PORT, port });
}

/** In a worker: keep `self.adminPort` to the primary's admin port. */
export function followAdminPort(self: SelfAddress): void {
  if (!cluster.isWorker) return;
  const fixed = Number(process.env[ADMIN_PORT_ENV]);
  if (Number.isInteger(fixed) && fixed > 0) self.adminPort = fixed;
  process.on("message", (message: { type?: string; port?: unknown }) => {
    if (message?.type === ADMIN_PORT && typeof message.port === "number") self.adminPort = message.port;
  });
}
