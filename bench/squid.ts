// squid (Debian's squid-openssl) as a comparison peer: ssl-bump of every CONNECT, no caching,
// one worker, in the foreground (-N), on 127.0.0.1 only, everything it writes (pid file,
// cache_log, access_log, the certificate database) in its own directory under the work dir.
// squid has no wildcard names: the benchmark's host names go into a hosts_file mapping them to
// 127.0.0.1, nameserver 127.0.0.1, and its ACL allows only .bench.test (deny otherwise, like
// the portcullis policy).
//
// Started as root, squid drops to `cache_effective_user proxy` (it refuses to run as root):
// its directory is handed to that user and the work dir made traversable (0711) for it.
import { execFile, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { childPids, cpuSeconds, freePort, log, onKillAll, trackChild } from "./lib.js";

export const CERTGEN = "/usr/lib/squid/security_file_certgen";

export interface SquidHandle {
  port: number;
  pid: number;
  caPem: string;
  version: string;
  /** CPU seconds of squid and of its helpers (security_file_certgen), which forge its certificates. */
  cpu(): number;
  /** Lines of access.log: bumped requests (`GET https://…`), WebSocket tunnels (`TCP_TUNNEL/101`), CONNECTs; known after close. */
  accessCounts(): { requests: number; websockets: number; connects: number; errors: number } | undefined;
  /** ERROR/FATAL lines of cache.log and what squid printed, bounded; known after close. */
  problems(): string[];
  close(): Promise<void>;
}

/** The squid binary: on the PATH, or Debian's /usr/sbin/squid (not on a normal user's PATH). */
function squidBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean)) {
    if (existsSync(join(dir, "squid"))) return join(dir, "squid");
  }
  return existsSync("/usr/sbin/squid") ? "/usr/sbin/squid" : undefined;
}

/** `squid -v`'s version, or why squid cannot be the ssl-bump peer (missing, or built without OpenSSL). */
export function squidVersion(): Promise<{ version?: string; missing?: string }> {
  const binary = squidBinary();
  if (!binary) return Promise.resolve({ missing: "squid is not installed (apt-get install squid-openssl)" });
  if (!existsSync(CERTGEN)) return Promise.resolve({ missing: `${CERTGEN} is missing (apt-get install squid-openssl)` });
  return new Promise((resolve) =>
    execFile(binary, ["-v"], { encoding: "utf8", timeout: 20_000 }, (error, stdout) => {
      if (error) return resolve({ missing: `squid -v failed: ${error.message}` });
      if (!stdout.includes("--with-openssl") || !stdout.includes("--enable-ssl-crtd")) {
        return resolve({ missing: "this squid is built without OpenSSL/ssl-crtd, so no ssl-bump (apt-get install squid-openssl)" });
      }
      resolve({ version: /Version (\S+)/.exec(stdout)?.[1] ?? "?" });
    }),
  );
}

/** The uid and gid squid runs as when started by root, or undefined when not root. */
function squidUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "proxy"], { encoding: "utf8" }).trim());
  return { uid: id("-u"), gid: id("-g") };
}

function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (statSync(path).isDirectory()) for (const entry of readdirSync(path)) chownTree(join(path, entry), uid, gid);
}

/** Resolves once cache.log says squid accepts connections (a probe connection would show up in access.log). */
function waitForListening(cacheLog: string, timeoutMs: number, exited: () => string | undefined): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = () => {
      const why = exited();
      if (why) return reject(new Error(why));
      let text = "";
      try {
        text = readFileSync(cacheLog, "utf8");
      } catch {
        // Not written yet.
      }
      if (text.includes("Accepting SSL bumped HTTP Socket connections")) return resolve();
      if (performance.now() > deadline) return reject(new Error(`no "Accepting SSL bumped HTTP Socket connections" in ${cacheLog} within ${timeoutMs} ms: ${tail(cacheLog)}`));
      setTimeout(check, 100);
    };
    check();
  });
}

/**
 * Starts squid in `dir` (created by the caller, holding the CA in ca/ca.pem and ca/ca-key.pem).
 * `hosts`: every host name the scenarios send through it.
 */
export async function startSquid(dir: string, options: { upstreamCaFile: string; hosts: string[]; version: string }): Promise<SquidHandle> {
  const binary = squidBinary()!;
  const port = await freePort();
  const user = squidUser();
  const db = join(dir, "ssl_db");
  execFileSync(CERTGEN, ["-c", "-s", db, "-M", "16MB"], { stdio: "ignore" });
  writeFileSync(join(dir, "hosts"), options.hosts.map((host) => `127.0.0.1 ${host}`).join("\n") + "\n");
  const conf = [
    "# written by bench/squid.ts",
    "workers 1",
    `http_port 127.0.0.1:${port} ssl-bump tls-cert=${join(dir, "ca", "ca.pem")} tls-key=${join(dir, "ca", "ca-key.pem")} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB`,
    `sslcrtd_program ${CERTGEN} -s ${db} -M 16MB`,
    "sslcrtd_children 5 startup=1 idle=1",
    "ssl_bump bump all",
    `tls_outgoing_options cafile=${options.upstreamCaFile}`,
    // Like the portcullis policy: deny by default, one allow rule for the benchmark's names.
    "acl bench dstdomain .bench.test",
    "http_access allow bench",
    "http_access deny all",
    // WebSocket handshakes keep their Upgrade (the token is case-sensitive; clients send "websocket").
    "http_upgrade_request_protocols websocket allow all",
    "cache deny all",
    `hosts_file ${join(dir, "hosts")}`,
    "dns_nameservers 127.0.0.1",
    `pid_filename ${join(dir, "squid.pid")}`,
    `cache_log ${join(dir, "cache.log")}`,
    `access_log stdio:${join(dir, "access.log")}`,
    "buffered_logs on",
    `coredump_dir ${dir}`,
    "netdb_filename none",
    "pinger_enable off",
    // No headers of its own on the way (the other proxies add none either).
    "via off",
    "forwarded_for transparent",
    "shutdown_lifetime 1 seconds",
    "visible_hostname bench-squid",
    "logfile_rotate 0",
    ...(user ? ["cache_effective_user proxy"] : []),
    "",
  ].join("\n");
  const confFile = join(dir, "squid.conf");
  writeFileSync(confFile, conf);
  if (user) {
    chownTree(dir, user.uid, user.gid);
    // The work dir (mkdtemp: 0700) must let the proxy user reach its own directory.
    for (let up = dirname(dir); up !== dirname(up) && statSync(up).uid === 0 && (statSync(up).mode & 0o111) !== 0o111; up = dirname(up)) {
      chmodSync(up, statSync(up).mode | 0o111);
    }
  }

  const started = performance.now();
  const child = spawn(binary, ["-N", "-f", confFile], { stdio: ["ignore", "pipe", "pipe"] });
  trackChild(child);
  let output = "";
  const collect = (text: string) => void (output.length < 20_000 && (output += text));
  child.stdout!.setEncoding("utf8").on("data", collect);
  child.stderr!.setEncoding("utf8").on("data", collect);
  let exitedHow: string | undefined;
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => {
      exitedHow = signal ?? String(code);
      resolve(exitedHow);
    }),
  );
  // Its helpers are squid's children: killed with it when the benchmark is stopped.
  let helpers: number[] = [];
  const forget = onKillAll(() => {
    for (const pid of [...helpers, ...childPids(child.pid!)]) if (isCertgen(pid)) process.kill(pid, "SIGKILL");
  });
  try {
    await waitForListening(join(dir, "cache.log"), 30_000, () => (exitedHow ? `squid exited (${exitedHow}) before listening: ${output.slice(0, 500)} ${tail(join(dir, "cache.log"))}` : undefined));
  } catch (error) {
    child.kill("SIGKILL");
    forget();
    throw error;
  }
  log(`squid (${options.version}) listening on 127.0.0.1:${port} after ${Math.round(performance.now() - started)} ms`);
  let counts: ReturnType<SquidHandle["accessCounts"]>;
  let problems: string[] = [];
  return {
    port,
    pid: child.pid!,
    caPem: readFileSync(join(dir, "ca", "ca.pem"), "utf8"),
    version: options.version,
    cpu() {
      helpers = childPids(child.pid!);
      return cpuSeconds(child.pid) + helpers.reduce((sum, pid) => sum + (cpuSeconds(pid) || 0), 0);
    },
    accessCounts: () => counts,
    problems: () => problems,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        helpers = childPids(child.pid!);
        child.kill("SIGTERM"); // waits shutdown_lifetime (1 s) for open connections, flushes its logs, exits 0
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        const how = await exited;
        clearTimeout(timer);
        if (how !== "0") problems.push(`squid exited with ${how} after SIGTERM`);
      }
      forget();
      // The helpers end when squid closes their pipes; one still running after 2 s is killed.
      for (let waited = 0; waited < 2_000 && helpers.some(isCertgen); waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
      for (const pid of helpers) {
        if (isCertgen(pid)) {
          problems.push(`squid helper ${pid} still running after squid exited; killed`);
          process.kill(pid, "SIGKILL");
        }
      }
      try {
        const lines = readFileSync(join(dir, "access.log"), "utf8").split("\n").filter(Boolean);
        counts = { requests: 0, websockets: 0, connects: 0, errors: 0 };
        for (const line of lines) {
          if (line.includes(" CONNECT ")) counts.connects++;
          else if (line.includes("TCP_TUNNEL/101")) counts.websockets++;
          else if (line.includes(" https://")) counts.requests++;
          if (!/\/(101|200) /.test(line)) counts.errors++;
        }
      } catch {
        counts = undefined;
      }
      const logged = (() => {
        try {
          return readFileSync(join(dir, "cache.log"), "utf8").split("\n");
        } catch {
          return [];
        }
      })();
      problems = [...problems, ...logged.filter((line) => /\b(ERROR|FATAL|assertion)\b/.test(line)).slice(0, 5)];
      if (output.trim()) problems.push(`squid printed: ${output.trim().slice(0, 500)}`);
    },
  };
}

/** Whether pid is (still) a security_file_certgen process. */
function isCertgen(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("security_file_certgen");
  } catch {
    return false;
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-8).join(" | ");
  } catch {
    return "";
  }
}
