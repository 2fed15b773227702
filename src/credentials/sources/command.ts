import { execFile } from "node:child_process";
import { SourceFailed, type SecretSourceReader } from "./source.js";

const COMMAND_TIMEOUT_MS = 10_000;

/** A shell command whose standard output (without one trailing line break) is the value; its output never reaches a message. */
export function commandSource(command: string): SecretSourceReader {
  return {
    description: "command",
    defaultTtlMs: 300_000,
    read() {
      return new Promise((resolve, reject) => {
        execFile("/bin/sh", ["-c", command], { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 1024 * 1024, windowsHide: true }, (error, stdout) => {
          if (error) {
            const why = error.killed ? `timed out after ${COMMAND_TIMEOUT_MS / 1000}s` : `exited with ${error.code ?? error.signal ?? "an error"}`;
            reject(new SourceFailed(`command ${why}`));
            return;
          }
          const value = stdout.replace(/\r?\n$/, "");
          if (value === "") reject(new SourceFailed("command printed nothing"));
          else resolve({ value });
        });
      });
    },
  };
}
