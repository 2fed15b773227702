import { z } from "zod";
import { parseDuration } from "./duration.js";

const duration = z
  .string()
  .refine((text) => parseDuration(text) !== undefined, {
    message: 'expected a duration like "250ms", "10s", "5m" or "1h"',
  })
  .transform((text) => parseDuration(text)!);

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'expected "HOST:PORT", e.g. "127.0.0.1:8080"');

const hostName = z.string().min(1).regex(/^[^\s/]+$/, "expected a host name or IP address");

export const proxySection = z.strictObject({
  listen: hostPort.default("127.0.0.1:8080"),
});

export const caSection = z.strictObject({
  dir: z.string().min(1).default("certs"),
});

export const upstreamSection = z.strictObject({
  trust: z.array(z.string().min(1)).default([]),
  connect_timeout: duration.default(10_000),
  response_timeout: duration.default(300_000),
  resolve: z.record(hostName, z.string().min(1)).default({}),
});

export const logSection = z.strictObject({
  audit: z.string().min(1).default("-"),
  level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  capture_body_bytes: z.number().int().min(0).max(1_048_576).default(4096),
});

export const passthroughSection = z.strictObject({
  hosts: z.array(hostName).default([]),
});

export const policySchema = z.strictObject({
  version: z.literal(1, { message: "expected version: 1" }),
  proxy: proxySection.default({ listen: "127.0.0.1:8080" }),
  ca: caSection.default({ dir: "certs" }),
  upstream: upstreamSection.prefault({}),
  log: logSection.prefault({}),
  passthrough: passthroughSection.prefault({}),
});

/** The policy as written in the file (durations as text). */
export type PolicyInput = z.input<typeof policySchema>;
/** The policy after validation: defaults filled, durations in milliseconds. */
export type Policy = z.output<typeof policySchema>;
