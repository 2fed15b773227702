import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { closestMatch } from "../core/did-you-mean.js";

interface CommandHelp {
  synopsis: string;
  summary: string;
  options: [string, string][];
}

export const COMMANDS: Record<string, CommandHelp> = {
  "init-ca": {
    synopsis: "init-ca [--dir certs] [--force]",
    summary: "create the CA that sandboxes trust (ca.pem, and ca-key.pem with mode 0600)",
    options: [
      ["--dir DIR", "where to write it (default: certs)"],
      ["--force", "replace an existing CA"],
    ],
  },
  start: {
    synopsis: "start [--policy FILE] [--listen HOST:PORT] [--admin HOST:PORT|off] [--workers N|auto]",
    summary: "run the proxy; SIGHUP reloads the policy, SIGUSR2 reopens the audit file, SIGTERM/SIGINT drain",
    options: [
      ["--policy FILE", "policy file (default: policies/default.yaml)"],
      ["--listen HOST:PORT", "overrides proxy.listen; port 0 picks a free one"],
      ["--admin HOST:PORT|off", "overrides admin.listen (/healthz /readyz /metrics); off: no admin listener"],
      ["--workers N|auto", "N processes sharing the port (auto: one per core)"],
      ["env PORTCULLIS_HEAP_HEADROOM_MIB=N", "V8 heap room kept above the live heap for relayed bodies (default 64, at most 1/8 of the heap limit; 0: V8's own growth)"],
    ],
  },
  check: {
    synopsis: "check [--policy FILE]",
    summary: "validate a policy: every error as FILE:LINE:COL: message (exit 1), warnings for secrets that cannot be resolved now",
    options: [["--policy FILE", "policy file (default: policies/default.yaml)"]],
  },
  explain: {
    synopsis: "explain [--policy FILE] [--client NAME] METHOD URL",
    summary: "what the proxy would do with a request, as JSON; exit 0 when allowed, 3 when denied",
    options: [
      ["--policy FILE", "policy file (default: policies/default.yaml)"],
      ["--client NAME", "judge it as this client"],
    ],
  },
  tail: {
    synopsis: "tail [FILE|-] [-n N] [--denied] [--host H] [--client C] [--status 4xx] [--json] [--once] [--color|--no-color]",
    summary: "follow an audit log, one line per event (stdin when no FILE); waits for FILE to appear",
    options: [
      ["-n, --lines N", "start with the last N events of FILE (default 10 when following, all with --once; 0: only new ones)"],
      ["--denied", "only denials"],
      ["--host H", "only this host (or *.suffix)"],
      ["--client C", "only this client"],
      ["--status LIST", "only these codes or classes, e.g. 403 or 4xx,5xx"],
      ["--json", "pass the matching JSON lines through"],
      ["--once", "print what is there and exit (no follow)"],
      ["--color, --no-color", "force colour on or off (default: on for a terminal, off with NO_COLOR)"],
    ],
  },
  trust: {
    synopsis: "trust [--policy FILE] [--ca FILE] [--proxy URL] [--no-proxy LIST] [--format shell|json] [--java-truststore FILE]",
    summary: "what a sandbox must set to use the proxy and trust its CA: export lines to eval, or JSON",
    options: [
      ["--policy FILE", "where the CA (ca.dir) and proxy.listen are read from (default: policies/default.yaml)"],
      ["--ca FILE", "the CA certificate (default: ca.pem in the policy's ca.dir)"],
      ["--proxy URL", "the proxy as sandboxes reach it (default: http://proxy.listen); may carry NAME:TOKEN@"],
      ["--no-proxy LIST", "hosts reached directly (default: localhost,127.0.0.1,::1)"],
      ["--format shell|json", "export lines safe to eval (default), or one JSON object"],
      ["--java-truststore FILE", "also write a PKCS#12 truststore with the CA and set JAVA_TOOL_OPTIONS"],
      ["--java-password PW", "the truststore's password (default: changeit)"],
    ],
  },
  help: { synopsis: "help [COMMAND]", summary: "this text, or one command's", options: [] },
};

export function version(): string {
  const manifest = JSON.parse(readFileSync(resolve(import.meta.dirname, "../../package.json"), "utf8")) as { version: string };
  return manifest.version;
}

export function usage(): string {
  const lines = Object.values(COMMANDS).map((help) => `  ${help.synopsis}\n      ${help.summary}`);
  return `usage: portcullis <command> [options]\n\ncommands:\n${lines.join("\n")}\n\n  --version      print the version\n  COMMAND --help  options of one command\n`;
}

export function commandUsage(command: string): string {
  const help = COMMANDS[command]!;
  const width = Math.max(0, ...help.options.map(([flag]) => flag.length));
  const options = help.options.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`).join("\n");
  return `usage: portcullis ${help.synopsis}\n\n${help.summary}\n${options ? `\noptions:\n${options}\n` : ""}`;
}

/** "unknown command" with the command that was probably meant. */
export function unknownCommand(command: string): string {
  const meant = closestMatch(command, Object.keys(COMMANDS));
  return `unknown command "${command}"${meant ? ` (did you mean "${meant}"?)` : ""}`;
}
