import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

// A getter or setter written in an object literal gives each object made there a hidden class
// of its own, which V8 keeps in the old generation: until the next full collection it holds
// whatever the accessor's closure holds (for an upstream response, the whole exchange), and
// every young collection promotes it (test/gc-retention.test.ts). Accessors belong on classes.

const SRC = resolve(import.meta.dirname, "../src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

/** The name of the function declaration a node is in, or "" at the top level. */
function enclosingFunction(node: ts.Node): string {
  for (let at = node.parent; at; at = at.parent) if (ts.isFunctionDeclaration(at)) return at.name?.text ?? "";
  return "";
}

/** Every accessor declared directly in an object literal, as file:line (in function). */
function literalAccessors(file: string, text: string): string[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const visit = (node: ts.Node) => {
    if ((ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node)) && ts.isObjectLiteralExpression(node.parent)) {
      found.push(`${relative(SRC, file)}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1} (in ${enclosingFunction(node) || "top level"})`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

describe("object literals in src/", () => {
  it("the check finds an accessor in a literal, and none in a class", () => {
    expect(literalAccessors("probe.ts", "const a = { get x() { return 1; }, set x(v) {} };\nclass B { get y() { return 2; } }\nfunction make() {\n  return { get z() { return 3; } };\n}")).toEqual([
      "../probe.ts:1 (in top level)",
      "../probe.ts:1 (in top level)",
      "../probe.ts:4 (in make)",
    ]);
  });

  it("declare no getters or setters (they belong on classes)", () => {
    const files = sources(SRC);
    expect(files.length).toBeGreaterThan(100);
    const found = files.flatMap((file) => literalAccessors(file, readFileSync(file, "utf8")));
    // Made once a process (createProxy's handle) or once a server (the inner h2 server), never once an exchange.
    const once = [/^proxy\/create-proxy\.ts:\d+ \(in createProxy\)$/, /^transport\/http2\/server\.ts:\d+ \(in createHttp2Server\)$/];
    expect(found.filter((where) => !once.some((allowed) => allowed.test(where)))).toEqual([]);
  });
});
