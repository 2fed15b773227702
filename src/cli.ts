#!/usr/bin/env node
import { join, resolve } from "node:path";
import { CA_CERT_FILE, CaExistsError, initCa } from "./ca/authority.js";
import cluster from "node:cluster";
import { assertNotOpenProxy, createProxy } from "./proxy/create-proxy.js";
import { parseWorkers, reportAuditHealth, reportToPrimary, runPrimary } from "./proxy/workers.js";
import { formatAuthority } from "./pipeline/target.js";
import { loadPolicyFile, PolicyInvalidError, positionInText, resolveFrom, type LoadedPolicy } from "./policy/load.js";
import { BudgetStores } from "./budgets/open-store.js";
import { secretWarnings } from "./policy/secret-warnings.js";
import { readFile } from "node:fs/promises";
import { printable } from "./core/printable.js";
import { tailFile, tailStream } from "./log/tail.js";
import { explain } from "./proxy/explain.js";
import { watchFile } from "./policy/watch.js";
import { parse, UsageError } from "./cli/args.js";
import { COMMANDS, commandUsage, unknownCommand, usage, version } from "./cli/help.js";
import { commandTrust } from "./cli/trust.js";
import { headroomFromEnv, keepHeapHeadroom } from "./proxy/heap-headroom.js";
import { parseListen } from "./proxy/create-proxy.js";

const DEFAULT_POLICY = "policies/default.yaml";
/** Like tail(1): following a file starts with its last 10 events; `-n all` replays it. */
const DEFAULT_TAIL_LINES = 10;

function trustInstructions(dir: string): string {
  const ca = resolve(dir, CA_CERT_FILE);
  return `CA certificate: ${ca}

Trust it in a sandbox with whichever applies:
  Debian/Ubuntu:   cp ${ca} /usr/local/share/ca-certificates/portcullis.crt && update-ca-certificates
  Node.js:         export NODE_EXTRA_CA_CERTS=${ca}
  Python requests: export REQUESTS_CA_BUNDLE=${ca}
  OpenSSL / many:  export SSL_CERT_FILE=${ca}
  curl:            export CURL_CA_BUNDLE=${ca}
Then point the sandbox at the proxy (curl reads only the lowercase http_proxy):
  export https_proxy=http://HOST:PORT http_proxy=http://HOST:PORT
Or let portcullis print all of it, for every toolchain: eval "$(portcullis trust --ca ${ca})"
`;
}

async function commandInitCa(args: string[]): Promise<number> {
  const { values } = parse(args, { dir: { type: "string", default: "certs" }, force: { type: "boolean", default: false } }, "init-ca");
  const dir = values.dir as string;
  try {
    await initCa(dir, { force: values.force as boolean });
  } catch (error) {
    if (error instanceof CaExistsError) {
      process.stderr.write(`portcullis: ${printable(error.message)}\n`);
      return 1;
    }
    throw error;
  }
  process.stdout.write(`created ${join(dir, CA_CERT_FILE)} and ${join(dir, "ca-key.pem")} (mode 0600)\n\n${trustInstructions(dir)}`);
  return 0;
}

async function loadOrReport(file: string): Promise<LoadedPolicy | undefined> {
  try {
    return await loadPolicyFile(file);
  } catch (error) {
    if (error instanceof PolicyInvalidError) {
      process.stderr.write(`${error.message}\n`);
      return undefined;
    }
    throw error;
  }
}

async function commandCheck(args: string[]): Promise<number> {
  const { values } = parse(args, { policy: { type: "string", default: DEFAULT_POLICY } }, "check");
  const loaded = await loadOrReport(values.policy as string);
  if (!loaded) return 1;
  const warnings = secretWarnings(loaded.policy);
  if (warnings.length) {
    const text = await readFile(loaded.file, "utf8");
    for (const warning of warnings) {
      const at = positionInText(text, warning.path);
      process.stderr.write(`${printable(`${loaded.file}:${at.line}:${at.col}: warning: ${warning.message}`)}\n`);
    }
  }
  process.stdout.write(`${values.policy}: valid${warnings.length ? ` (${warnings.length} warning${warnings.length > 1 ? "s" : ""})` : ""}\n`);
  return 0;
}

async function commandExplain(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { policy: { type: "string", default: DEFAULT_POLICY }, client: { type: "string" } }, "explain");
  if (positionals.length !== 2) throw new UsageError("explain needs METHOD and URL, e.g. explain GET https://api.github.com/zen", "explain");
  const loaded = await loadOrReport(values.policy as string);
  if (!loaded) return 1;
  let explanation;
  const budgets = loaded.policy.budgets;
  // The counters explain shows are read from where the running proxy keeps them (Redis, or the memory store's state file).
  const stores = new BudgetStores("process", { warn: () => undefined, info: () => undefined });
  try {
    const ledger = stores.ledgerFor({ section: budgets, stateFile: budgets.state_file && resolveFrom(loaded, budgets.state_file) });
    explanation = await explain(loaded.policy, positionals[0]!, positionals[1]!, (values.client as string | undefined) ?? null, ledger);
  } catch (error) {
    process.stderr.write(`portcullis: ${printable((error as Error).message)}\n`);
    return 1;
  } finally {
    await stores.close();
  }
  process.stdout.write(`${JSON.stringify(explanation, null, 2)}\n`);
  // A script can branch on the decision without parsing JSON.
  return explanation.decision === "allow" ? 0 : 3;
}

async function commandTail(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    denied: { type: "boolean", default: false },
    host: { type: "string" },
    client: { type: "string" },
    status: { type: "string" },
    json: { type: "boolean", default: false },
    once: { type: "boolean", default: false },
    color: { type: "boolean" },
    "no-color": { type: "boolean" },
    lines: { type: "string", short: "n" },
  }, "tail");
  if (positionals.length > 1) throw new UsageError("tail takes at most one FILE", "tail");
  if (values.status !== undefined && !/^([1-5]xx|\d{3})(,([1-5]xx|\d{3}))*$/i.test(values.status as string)) {
    throw new UsageError(`--status expects codes or classes like 403 or 4xx,5xx, got "${values.status}"`, "tail");
  }
  // Following starts like tail(1), with the last 10; --once prints the file (a report, not a view).
  const linesText = (values.lines as string | undefined) ?? (values.once ? "all" : String(DEFAULT_TAIL_LINES));
  if (!/^(\d+|all)$/.test(linesText)) throw new UsageError(`-n expects a number of lines or "all", got "${linesText}"`, "tail");
  const lines = linesText === "all" ? undefined : Number(linesText);
  const colour = values["no-color"] ? false : ((values.color as boolean | undefined) ?? (process.stdout.isTTY && !process.env.NO_COLOR));
  const options = {
    denied: values.denied as boolean,
    host: values.host as string | undefined,
    client: values.client as string | undefined,
    status: values.status as string | undefined,
    json: values.json as boolean,
    colour: Boolean(colour),
    follow: !(values.once as boolean),
  };
  const file = positionals[0];
  if (file === undefined || file === "-") {
    await tailStream(process.stdin, process.stdout, options);
    return 0;
  }
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  process.once("SIGTERM", () => stop.abort());
  try {
    await tailFile(file, process.stdout, { ...options, lines }, stop.signal, () => process.stderr.write(`portcullis: waiting for ${file} to appear\n`));
  } catch (error) {
    process.stderr.write(`portcullis: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}\n`);
    return 1;
  }
  return 0;
}

/** `--admin HOST:PORT` replaces admin.listen, `--admin off` (null) removes the admin listener. */
function adminOverride(admin: string | undefined): string | null | undefined {
  if (admin === undefined || admin === "off") return admin === "off" ? null : undefined;
  try {
    parseListen(admin);
  } catch (error) {
    throw new UsageError(`--admin: ${(error as Error).message} (or "off")`, "start");
  }
  return admin;
}

async function commandStart(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    { policy: { type: "string", default: DEFAULT_POLICY }, listen: { type: "string" }, admin: { type: "string" }, workers: { type: "string", default: "1" } },
    "start",
  );
  let workers: number;
  try {
    workers = parseWorkers(values.workers as string);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  let headroomBytes: number;
  try {
    headroomBytes = headroomFromEnv(process.env.PORTCULLIS_HEAP_HEADROOM_MIB);
  } catch (error) {
    throw new UsageError((error as Error).message, "start");
  }
  const policyFile = values.policy as string;
  const admin = adminOverride(values.admin as string | undefined);
  const loaded = await loadOrReport(policyFile);
  if (!loaded) return 1;
  const listen = (values.listen as string | undefined) ?? loaded.policy.proxy.listen;
  const isWorker = cluster.isWorker && process.env.PORTCULLIS_WORKER === "1";
  if (workers > 1 && !isWorker) {
    assertNotOpenProxy(loaded, listen);
    const withAdmin = admin === undefined ? loaded : { ...loaded, policy: { ...loaded.policy, admin: { ...loaded.policy.admin, listen: admin ?? undefined } } };
    return runPrimary(workers, withAdmin);
  }
  const proxy = await createProxy({ policy: loaded, listen, ...(isWorker ? { adminListen: null, onAuditHealth: reportAuditHealth } : admin !== undefined ? { adminListen: admin } : {}) });
  const stopHeapHeadroom = keepHeapHeadroom({ headroomBytes });
  const address = await proxy.listen();
  if (isWorker) {
    reportToPrimary(address, proxy.metrics.registry);
  } else {
    process.stderr.write(`portcullis listening on ${formatAuthority(address.address, address.port)}\n`);
    if (proxy.adminAddress) process.stderr.write(`portcullis admin on ${formatAuthority(proxy.adminAddress.address, proxy.adminAddress.port)} (/healthz /readyz /metrics)\n`);
  }

  const reload = (why: string) => proxy.reloadFromFile(policyFile, why);
  const watching = watchFile(policyFile, () => void reload("file changed"));
  process.on("SIGHUP", () => {
    proxy.reopenLogs();
    watching.remember();
    void reload("SIGHUP");
  });
  process.on("SIGUSR2", () => proxy.reopenLogs());
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  watching.stop();
  proxy.diagnostics.info("draining");
  await proxy.close();
  stopHeapHeadroom();
  return 0;
}

function commandHelp(args: string[]): number {
  const [topic] = args;
  if (topic === undefined) {
    process.stdout.write(usage());
    return 0;
  }
  if (!(topic in COMMANDS)) throw new UsageError(unknownCommand(topic));
  process.stdout.write(commandUsage(topic));
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command && command in COMMANDS && (rest.includes("--help") || rest.includes("-h"))) return commandHelp([command]);
  switch (command) {
    case "--version":
    case "-V":
    case "version":
      process.stdout.write(`portcullis ${version()}\n`);
      return 0;
    case "trust":
      return commandTrust(rest, DEFAULT_POLICY);
    case "init-ca":
      return commandInitCa(rest);
    case "start":
      return commandStart(rest);
    case "check":
      return commandCheck(rest);
    case "explain":
      return commandExplain(rest);
    case "tail":
      return commandTail(rest);
    case "help":
      return commandHelp(rest);
    case "--help":
    case "-h":
      return commandHelp([]);
    default:
      throw new UsageError(command ? unknownCommand(command) : "no command given");
  }
}

// A fault in one request's handling must never take the proxy down for everyone else.
process.on("unhandledRejection", (reason) => {
  process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), name: "portcullis", msg: "unhandled rejection (kept running)", err: String((reason as Error)?.stack ?? reason) })}\n`);
});

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      const help = error.command ? commandUsage(error.command) : usage();
      process.stderr.write(`portcullis: ${error.message}\n\n${help}\nrun "portcullis help${error.command ? ` ${error.command}` : ""}" for more\n`);
      process.exit(2);
    }
    process.stderr.write(`portcullis: ${printable((error as Error).message)}\n`);
    process.exit(1);
  },
);
