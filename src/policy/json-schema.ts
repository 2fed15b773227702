import { writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { policySchema } from "./schema.js";

/** The policy schema as JSON Schema (the input form: durations as text), for editors. */
export function policyJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(policySchema, { io: "input", unrepresentable: "any" }),
    title: "portcullis policy",
    description: "Policy file for the portcullis egress proxy (see SPEC.md section 3).",
  };
}

export function renderPolicyJsonSchema(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const target = process.argv[2] ?? "policies/schema.json";
  writeFileSync(target, renderPolicyJsonSchema());
  process.stdout.write(`wrote ${target}\n`);
}
