import { SourceFailed, type SecretSourceReader } from "./source.js";

/** An environment variable, read on every use (it cannot change under a running process, but costs nothing). */
export function envSource(variable: string): SecretSourceReader {
  return {
    description: `env ${variable}`,
    defaultTtlMs: 0,
    async read() {
      const value = process.env[variable];
      if (value === undefined || value === "") throw new SourceFailed(`environment variable ${variable} is not set`);
      return { value };
    },
  };
}
