import type { Policy } from "./schema.js";
import { partReferences } from "./secret-source-schema.js";
import type { SemanticIssue } from "./validate.js";

/**
 * `secret: NAME` parts must name a defined secret and must not lead back to themselves: a
 * cycle would have each mint wait for the other forever. Client tokens are resolved apart
 * from the named secrets, so they cannot refer to one.
 */
export function secretReferenceIssues(policy: Policy): SemanticIssue[] {
  const issues: SemanticIssue[] = [];
  const edges = new Map<string, string[]>();
  for (const [name, source] of Object.entries(policy.secrets)) {
    const references = partReferences(source);
    edges.set(name, references.map((reference) => reference.secret));
    for (const reference of references) {
      if (!(reference.secret in policy.secrets)) {
        issues.push({ path: ["secrets", name, ...reference.part], message: `secret "${reference.secret}" is not defined under secrets` });
      }
    }
  }
  const reported = new Set<string>();
  for (const start of edges.keys()) {
    const cycle = findCycle(start, edges);
    if (cycle && !cycle.some((name) => reported.has(name))) {
      cycle.forEach((name) => reported.add(name));
      issues.push({ path: ["secrets", start], message: `secrets refer to each other in a cycle: ${[...cycle, cycle[0]].join(" -> ")}` });
    }
  }
  policy.clients.forEach((client, index) => {
    for (const reference of partReferences(client.token)) {
      issues.push({ path: ["clients", index, "token", ...reference.part], message: "a client token cannot refer to a named secret; give its source directly" });
    }
  });
  return issues;
}

/** The cycle through `start`, if one leads back to it. */
function findCycle(start: string, edges: Map<string, string[]>): string[] | undefined {
  const walk = (node: string, path: string[], seen: Set<string>): string[] | undefined => {
    for (const next of edges.get(node) ?? []) {
      if (next === start) return path;
      if (seen.has(next)) continue;
      seen.add(next);
      const found = walk(next, [...path, next], seen);
      if (found) return found;
    }
    return undefined;
  };
  return walk(start, [start], new Set([start]));
}
