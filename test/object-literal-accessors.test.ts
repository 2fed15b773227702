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

/** Every accessor declared directly in an object literal, as file:line. */
function literalAccessors(file: string, text: string): string[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const visit = (node: ts.Node) => {
    if ((ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node)) && ts.isObjectLiteralExpression(node.parent)) {
      found.push(`${relative(SRC, file)}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

describe("object literals in src/", () => {
  it("the check finds an accessor in a literal, and none in a class", () => {
    expect(literalAccessors("probe.ts", "const a = { get x() { return 1; }, set x(v) {} };\nclass B { get y() { return 2; } }")).toEqual(["../probe.ts:1", "../probe.ts:1"]);
  });

  it("declare no getters or setters (they belong on classes)", () => {
    const files = sources(SRC);
    expect(files.length).toBeGreaterThan(100);
    const found = files.flatMap((file) => literalAccessors(file, readFileSync(file, "utf8")));
    // Made once a process (createProxy's handle) or once a server (the inner h2 server), never once an exchange.
    const once = ["proxy/create-proxy.ts:", "transport/http2/server.ts:"];
    expect(found.filter((where) => !once.some((file) => where.startsWith(file)))).toEqual([]);
  });
});
