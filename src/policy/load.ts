import { readFile } from "node:fs/promises";
import { printable } from "../core/printable.js";
import { dirname, isAbsolute, resolve as resolvePath } from "node:path";
import { isCollection, isMap, isPair, isScalar, LineCounter, parseDocument, type Document, type Node } from "yaml";
import type { z } from "zod";
import { closestMatch } from "../core/did-you-mean.js";
import { resolvePolicyPaths } from "./relative-paths.js";
import { allowedKeysAt } from "./schema-keys.js";
import { policySchema, type Policy } from "./schema.js";
import { validateSemantics, type SemanticIssue } from "./validate.js";

export interface PolicyError {
  file: string;
  line: number;
  col: number;
  message: string;
}

export class PolicyInvalidError extends Error {
  constructor(readonly errors: PolicyError[]) {
    super(errors.map(formatPolicyError).join("\n"));
    this.name = "PolicyInvalidError";
  }
}

export function formatPolicyError(error: PolicyError): string {
  return printable(`${error.file}:${error.line}:${error.col}: ${error.message}`);
}

export interface LoadedPolicy {
  policy: Policy;
  /** Absolute path of the file, or "<inline>" */
  file: string;
  /** Directory relative paths in the policy (ca.dir, upstream.trust, log.audit) resolve against. */
  baseDir: string;
}

type PathKey = string | number;

/** Finds the node a validation path points at; for a key that should not be there, the key itself. */
function locate(doc: Document, path: readonly PathKey[], unknownKey?: string): Node | undefined {
  let node: unknown = doc.contents;
  let last: Node | undefined = doc.contents ?? undefined;
  for (const key of path) {
    if (!isCollection(node)) break;
    const next = node.get(key, true);
    if (next === undefined) break;
    node = next;
    last = next as Node;
  }
  if (unknownKey !== undefined && isMap(node)) {
    const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && item.key.value === unknownKey);
    if (pair && isPair(pair)) return pair.key as Node;
  }
  return last;
}

function position(lineCounter: LineCounter, node: Node | undefined): { line: number; col: number } {
  const offset = node?.range?.[0] ?? 0;
  return lineCounter.linePos(offset);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.length ? `${issue.path.join(".")}: ` : "";
  return `${where}${issue.message}`;
}

/**
 * A value no branch of a union accepts: the issues of the branch whose type it has (a string's
 * problems, not "expected an object"), with their full paths, rather than zod's "Invalid input".
 */
function unionBranchIssues(issue: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return [issue];
  const typed = issue.errors.filter((branch) => !branch.some((inner) => inner.code === "invalid_type" && inner.path.length === 0));
  if (typed.length !== 1) return [issue];
  return typed[0]!.map((inner) => ({ ...inner, path: [...issue.path, ...inner.path] }) as z.core.$ZodIssue).flatMap(unionBranchIssues);
}

/**
 * The cross-field checks (names defined, duplicates, addresses) of a policy whose schema check
 * failed, so that one run reports those too: run over the sections that are valid on their own
 * (the others at their defaults), and kept only for valid sections. Skipped when `secrets` or
 * `clients` is broken, since most of them look names up there.
 */
function semanticIssuesOfValidSections(data: unknown): SemanticIssue[] {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return [];
  const raw = data as Record<string, unknown>;
  const sections: Record<string, unknown> = { version: 1 };
  const valid = new Set<string>();
  for (const [key, schema] of Object.entries(policySchema.shape)) {
    if (key === "version") continue;
    const parsed = schema.safeParse(raw[key]);
    if (parsed.success) {
      sections[key] = parsed.data;
      if (key in raw) valid.add(key);
    } else {
      const fallback = schema.safeParse(undefined);
      if (!fallback.success) return [];
      sections[key] = fallback.data;
    }
  }
  const broken = (key: string) => key in raw && !valid.has(key);
  if (broken("secrets") || broken("clients")) return [];
  // Each section is its own schema's output, so together they have the shape of a parsed policy.
  return validateSemantics(sections as Policy).filter((issue) => valid.has(String(issue.path[0])));
}

/** Validates policy text; every problem is reported, each with its line and column. */
export function parsePolicy(text: string, file = "<inline>", baseDir = process.cwd()): LoadedPolicy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const errors: PolicyError[] = [];
  // Positions come from the line counter: with prettyErrors off the yaml library leaves linePos unset.
  for (const error of doc.errors) {
    const pos = lineCounter.linePos(error.pos[0]);
    errors.push({ file, line: pos.line, col: pos.col, message: error.message.split("\n")[0]! });
  }

  // The schema is checked even over a syntax error, on what the yaml library could read, so
  // that one run of `check` reports every fault.
  let data: unknown;
  try {
    data = doc.toJS() ?? {};
  } catch {
    data = undefined;
  }
  if (data === undefined) throw new PolicyInvalidError(errors);
  const result = policySchema.safeParse(data);
  if (!result.success) {
    for (const issue of result.error.issues.flatMap(unionBranchIssues)) {
      const path = issue.path.filter((key): key is PathKey => typeof key !== "symbol");
      if (issue.code === "unrecognized_keys") {
        const allowed = allowedKeysAt(policySchema, path);
        for (const key of issue.keys) {
          const pos = position(lineCounter, locate(doc, path, key));
          const meant = closestMatch(key, allowed.filter((candidate) => !issue.keys.includes(candidate)));
          errors.push({ file, ...pos, message: `${[...path, key].join(".")}: unknown key "${key}"${meant ? ` (did you mean "${meant}"?)` : ""}` });
        }
        continue;
      }
      const pos = position(lineCounter, locate(doc, path));
      errors.push({ file, ...pos, message: describeIssue(issue) });
    }
    for (const issue of semanticIssuesOfValidSections(data)) {
      const pos = position(lineCounter, locate(doc, issue.path));
      errors.push({ file, ...pos, message: `${issue.path.join(".")}: ${issue.message}` });
    }
    errors.sort((a, b) => a.line - b.line || a.col - b.col);
    throw new PolicyInvalidError(errors);
  }
  if (errors.length) {
    errors.sort((a, b) => a.line - b.line || a.col - b.col);
    throw new PolicyInvalidError(errors);
  }
  for (const issue of validateSemantics(result.data)) {
    const pos = position(lineCounter, locate(doc, issue.path));
    errors.push({ file, ...pos, message: `${issue.path.join(".")}: ${issue.message}` });
  }
  if (errors.length) {
    errors.sort((a, b) => a.line - b.line || a.col - b.col);
    throw new PolicyInvalidError(errors);
  }
  return { policy: resolvePolicyPaths(result.data, baseDir), file, baseDir };
}

export async function loadPolicyFile(file: string): Promise<LoadedPolicy> {
  const absolute = resolvePath(file);
  let text: string;
  try {
    text = await readFile(absolute, "utf8");
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new PolicyInvalidError([{ file, line: 1, col: 1, message: `cannot read policy: ${reason}` }]);
  }
  // Relative paths inside a policy resolve against its own folder (SPEC section 12), not the working directory.
  return parsePolicy(text, file, dirname(absolute));
}

/** The line and column of a path in policy text (1:1 when it is not there). */
export function positionInText(text: string, path: readonly PathKey[]): { line: number; col: number } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  return position(lineCounter, locate(doc, path));
}

export function resolveFrom(loaded: LoadedPolicy, path: string): string {
  return isAbsolute(path) ? path : resolvePath(loaded.baseDir, path);
}
