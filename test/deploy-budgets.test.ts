import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { parsePolicy } from "../src/policy/load.js";

const base = join(import.meta.dirname, "../deploy/kubernetes");
const overlay = join(base, "budgets-redis");

type Doc = { kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: Record<string, unknown>; data?: Record<string, string> } & Record<string, unknown>;
const docs = (file: string): Doc[] => parseAllDocuments(readFileSync(file, "utf8")).map((doc) => (expect(doc.errors).toEqual([]), doc.toJS() as Doc));

describe("deploy/kubernetes/budgets-redis", () => {
  const kustomization = parse(readFileSync(join(overlay, "kustomization.yaml"), "utf8")) as { resources: string[]; patches: { path: string }[] };
  const baseKustomization = parse(readFileSync(join(base, "kustomization.yaml"), "utf8")) as { resources: string[] };
  const [patch] = docs(join(overlay, "policy.yaml"));
  const [redisDeployment, redisService] = docs(join(overlay, "redis.yaml"));
  const [deployment] = docs(join(base, "deployment.yaml"));
  const [baseConfigMap] = docs(join(base, "configmap.yaml"));

  it("layers Redis and a budgeted policy over the base, whose Deployment runs several replicas", () => {
    expect(kustomization.resources).toEqual(["..", "redis.yaml"]);
    expect(baseKustomization.resources).toEqual(expect.arrayContaining(["configmap.yaml", "deployment.yaml", "service.yaml"]));
    for (const { path } of kustomization.patches) expect(() => readFileSync(join(overlay, path))).not.toThrow();
    expect(patch).toMatchObject({ kind: "ConfigMap", metadata: { name: baseConfigMap!.metadata.name } });
    expect((deployment!.spec as { replicas: number }).replicas).toBeGreaterThan(1);
  });

  it("ships a policy that validates, keeps budgets in the Redis Service, and still requires proxy auth", () => {
    const loaded = parsePolicy(patch!.data!["policy.yaml"]!, "budgets-redis:policy.yaml");
    const { budgets } = loaded.policy;
    const url = new URL(budgets.store);
    expect(url.protocol).toBe("redis:");
    expect(url.hostname).toBe(redisService!.metadata.name);
    const ports = (redisService!.spec as { ports: { port: number; targetPort: string }[] }).ports;
    expect(ports.map((p) => p.port)).toContain(Number(url.port));
    expect(budgets.rules.length).toBeGreaterThan(0);
    expect(loaded.policy.clients.length).toBeGreaterThan(0);
    // Budgeted hosts must also be allowed, or the budget guards nothing.
    const allowed = loaded.policy.network.rules.filter((rule) => rule.action === "allow").flatMap((rule) => rule.hosts);
    for (const host of budgets.rules.flatMap((rule) => rule.hosts)) expect(allowed).toContain(host);
  });

  it("selects the Redis pods with its Service and runs Redis unprivileged", () => {
    const spec = redisDeployment!.spec as { selector: { matchLabels: Record<string, string> }; template: { spec: { securityContext: { runAsNonRoot: boolean }; containers: { ports: { name: string }[]; securityContext: object }[] } } };
    expect((redisService!.spec as { selector: Record<string, string> }).selector).toEqual(spec.selector.matchLabels);
    expect(spec.template.spec.securityContext.runAsNonRoot).toBe(true);
    expect(spec.template.spec.containers[0]!.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    expect(spec.template.spec.containers[0]!.ports.map((p) => p.name)).toContain("redis");
  });
});
