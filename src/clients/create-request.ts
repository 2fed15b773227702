import { z } from "zod";
import { parseDuration, formatDuration } from "../policy/duration.js";
import { ruleSchema, type Policy } from "../policy/schema.js";
import type { NewClient } from "./registry.js";

const MIN_TTL_MS = 1000;

/** The body of POST /v1/clients. Rules are network.rules entries, checked by the very same schema. */
const createBody = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, "expected a name of letters, digits, '_', '.', '-' (at most 128)"),
  ttl: z.union([z.string(), z.number()], { message: 'expected a duration like "30m" or "2h" (or a number of seconds)' }),
  rules: z.array(ruleSchema).max(1000).default([]),
  credentials: z.array(z.string().min(1)).max(1000).default([]),
});

export class BadRequest extends Error {}

function issuesText(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length ? `${issue.path.join(".")}: ` : "";
      if (issue.code === "unrecognized_keys") return `${where}unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((key) => `"${key}"`).join(", ")}`;
      return `${where}${issue.message}`;
    })
    .join("; ");
}

function ttlMs(ttl: string | number, maxMs: number): number {
  const ms = typeof ttl === "number" ? (Number.isFinite(ttl) ? Math.round(ttl * 1000) : undefined) : parseDuration(ttl);
  if (ms === undefined) throw new BadRequest(`ttl: expected a duration like "30m" or "2h" (or a number of seconds), got ${JSON.stringify(ttl)}`);
  if (ms < MIN_TTL_MS) throw new BadRequest(`ttl: at least 1s`);
  if (ms > maxMs) throw new BadRequest(`ttl: ${typeof ttl === "number" ? `${ttl}s` : ttl} is over admin.max_ttl (${formatDuration(maxMs)})`);
  return ms;
}

/**
 * Reads and checks a registration against the running policy: the shape (unknown keys are
 * errors, as in the file), a name no file client or registered client has, a ttl within
 * admin.max_ttl, credential names the file defines. Every fault is a BadRequest with the reason.
 */
export function parseCreateRequest(body: unknown, policy: Policy, taken: (name: string) => boolean): NewClient {
  const parsed = createBody.safeParse(body);
  if (!parsed.success) throw new BadRequest(issuesText(parsed.error));
  const { name, ttl, rules, credentials } = parsed.data;
  if (policy.clients.some((client) => client.name === name)) throw new BadRequest(`name: "${name}" is a client of the policy file`);
  if (taken(name)) throw new BadRequest(`name: a client named "${name}" is already registered`);
  const ms = ttlMs(ttl, policy.admin.max_ttl);
  const ruleNames = new Set<string>();
  rules.forEach((rule, index) => {
    if (ruleNames.has(rule.name)) throw new BadRequest(`rules.${index}.name: duplicate rule name "${rule.name}"`);
    ruleNames.add(rule.name);
    // They are this client's rules: naming other clients would mean nothing, or something surprising.
    if (rule.clients) throw new BadRequest(`rules.${index}.clients: a registered client's rules apply to it alone; leave clients out`);
  });
  const known = new Set(policy.credentials.map((credential) => credential.name));
  credentials.forEach((credential, index) => {
    if (!known.has(credential)) throw new BadRequest(`credentials.${index}: "${credential}" is not a credential of the policy file`);
  });
  return { name, ttlMs: ms, rules, credentials: [...new Set(credentials)] };
}
