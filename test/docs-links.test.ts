import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");

/** Relative links and backquoted paths a reader follows from a clone of the repository. */
function relativeLinks(file: string): string[] {
  const text = readFileSync(join(ROOT, file), "utf8");
  const links = [...text.matchAll(/\]\(([^)#\s]+)[^)]*\)/g)].map((match) => match[1]!).filter((link) => !/^[a-z]+:/.test(link));
  return links.map((link) => join(dirname(file), link));
}

describe("documentation", () => {
  it("README's links resolve inside the repository, the contract included", () => {
    const links = relativeLinks("README.md");
    expect(links).toContain(join("docs", "CONTRACT.md"));
    for (const link of links) expect(existsSync(join(ROOT, link)), link).toBe(true);
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme).not.toContain("../shared/");
    expect(readme).toContain("X-Portcullis-Reason");
    expect(readme).toContain("tail --denied");
  });

  it("the contract documents every command the CLI has", () => {
    const contract = readFileSync(join(ROOT, "docs", "CONTRACT.md"), "utf8");
    for (const command of ["init-ca", "start", "check", "explain", "tail", "trust"]) expect(contract).toContain(`portcullis ${command}`);
  });
});
