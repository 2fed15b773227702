import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { tempDir } from "./pki.js";
import { freePort } from "./ports.js";

export const SQUID = "/usr/sbin/squid";
const NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth";


export interface AccessLine {
  method: string;
  url: string;
  status: number;
  user: string;
  /** The source port of the connection the request came on: the same one for requests on a kept-alive connection. */
  clientPort: number;
}

export interface Squid {
  port: number;
  url: string;
  dir: string;
  pidFile: string;
  process: ChildProcess;
  /** The access log, one entry a line (a CONNECT is logged when its tunnel closes). */
  accessLog(): AccessLine[];
  /** Waits until the access log has a line the predicate accepts. */
  waitForLine(predicate: (line: AccessLine) => boolean, timeoutMs?: number): Promise<AccessLine>;
  stop(): Promise<void>;
}

export interface SquidOptions {
  /** Ports CONNECT may reach (squid's own defaults allow only 443; these are the test upstreams'). */
  connectPorts: number[];
  /** Basic auth users (checked by squid's basic_ncsa_auth against an htpasswd file made here). */
  users?: Record<string, string>;
}

/**
 * Debian's squid as a plain forward proxy (no cache, no bumping) on a free loopback port, in
 * a directory of its own: its own squid.conf, pid file, logs and service name, so test files
 * running in parallel never share one.
 */
export async function startSquid(options: SquidOptions): Promise<Squid> {
  const dir = tempDir("squid");
  // Started as root, squid works as its effective user (proxy): the directory must be its too.
  chmodSync(dir, 0o777);
  const port = await freePort();
  const pidFile = join(dir, "squid.pid");
  const accessLog = join(dir, "access.log");
  const auth: string[] = [];
  if (options.users) {
    const htpasswd = join(dir, "htpasswd");
    const lines = Object.entries(options.users).map(([user, password]) => `${user}:${execFileSync("openssl", ["passwd", "-apr1", password], { encoding: "utf8" }).trim()}`);
    writeFileSync(htpasswd, `${lines.join("\n")}\n`, { mode: 0o644 });
    auth.push(`auth_param basic program ${NCSA_AUTH} ${htpasswd}`, "auth_param basic realm squid-test", "acl authenticated proxy_auth REQUIRED");
  }
  const conf = [
    `http_port 127.0.0.1:${port}`,
    `pid_filename ${pidFile}`,
    `cache_log ${join(dir, "cache.log")}`,
    "logformat pcx %rm %ru %>Hs %un %>p",
    `access_log stdio:${accessLog} pcx`,
    "logfile_rotate 0",
    `coredump_dir ${dir}`,
    "cache deny all",
    "cache_mem 0 MB",
    "memory_cache_shared off",
    "netdb_filename none",
    "shutdown_lifetime 0 seconds",
    "buffered_logs off",
    "via off",
    "forwarded_for delete",
    "visible_hostname squid-test",
    "acl to_test_ports port " + options.connectPorts.join(" "),
    "acl CONNECT method CONNECT",
    "http_access deny CONNECT !to_test_ports",
    ...auth,
    options.users ? "http_access allow authenticated" : "http_access allow localhost",
    "http_access deny all",
  ].join("\n");
  const confFile = join(dir, "squid.conf");
  writeFileSync(confFile, `${conf}\n`, { mode: 0o644 });
  const service = `pcx${process.pid}x${port}`;
  const child = spawn(SQUID, ["-N", "-n", service, "-f", confFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await waitForListening(port, child, () => `${stderr}\n${existsSync(join(dir, "cache.log")) ? readFileSync(join(dir, "cache.log"), "utf8") : ""}`);
  const read = (): AccessLine[] =>
    (existsSync(accessLog) ? readFileSync(accessLog, "utf8") : "")
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [method = "", url = "", status = "0", user = "-", clientPort = "0"] = line.split(" ");
        return { method, url, status: Number(status), user, clientPort: Number(clientPort) };
      });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    pidFile,
    process: child,
    accessLog: read,
    async waitForLine(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = read().find(predicate);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no matching squid access log line within ${timeoutMs} ms; log:\n${read().map((line) => JSON.stringify(line)).join("\n")}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop() {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGTERM");
      await exited;
    },
  };
}

/** Squid is up when its port accepts connections (it may exit first: a bad config). */
async function waitForListening(port: number, child: ChildProcess, diagnostics: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`squid exited with ${child.exitCode}:\n${diagnostics()}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`squid did not listen on ${port} within 20 s:\n${diagnostics()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
