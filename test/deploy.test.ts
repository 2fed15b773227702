import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { assertNotOpenProxy, parseListen } from "../src/proxy/create-proxy.js";
import { parsePolicy } from "../src/policy/load.js";

const dir = join(import.meta.dirname, "../deploy");
interface Mount {
  name: string;
  mountPath: string;
}
interface Container {
  args: string[];
  command: string[];
  ports: { name: string; containerPort: number }[];
  readinessProbe: { httpGet: object };
  livenessProbe: { httpGet: object };
  securityContext: object;
  volumeMounts: Mount[];
}
interface PodSpec {
  containers: Container[];
  initContainers: Container[];
  volumes: { name: string; configMap?: { name: string }; secret?: { secretName: string }; emptyDir?: object }[];
  securityContext: { runAsNonRoot?: boolean };
  terminationGracePeriodSeconds: number;
}
interface Doc {
  kind: string;
  metadata: { name: string };
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
    ports: { targetPort: string }[];
  } & { selector: Record<string, string> & { matchLabels: Record<string, string> } };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

function docs(file: string): Doc[] {
  return parseAllDocuments(readFileSync(join(dir, "kubernetes", file), "utf8")).map((doc) => {
    expect(doc.errors).toEqual([]);
    return doc.toJS() as Doc;
  });
}

const [deployment] = docs("deployment.yaml");
const [service] = docs("service.yaml");
const [configMap] = docs("configmap.yaml");
const secrets = docs("secret.yaml");
const pod = deployment!.spec.template.spec;
const container = pod.containers[0]!;
const policyText = configMap!.data!["policy.yaml"]!;
const loaded = parsePolicy(policyText, "configmap:policy.yaml");

function mountFor(path: string): { name: string; mountPath: string } {
  const mount = container.volumeMounts.find((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
  if (!mount) throw new Error(`nothing is mounted at ${path}`);
  return mount;
}

describe("deploy/", () => {
  it("ships a policy that validates and is not an open proxy on its non-loopback listener", () => {
    expect(loaded.policy.clients.length).toBeGreaterThan(0);
    expect(() => assertNotOpenProxy(loaded, loaded.policy.proxy.listen)).not.toThrow();
  });

  it("exposes the ports the policy listens on, and the Service targets them by name", () => {
    const ports = Object.fromEntries(container.ports.map((p) => [p.name, p.containerPort]));
    expect(ports.proxy).toBe(parseListen(loaded.policy.proxy.listen).port);
    expect(ports.admin).toBe(parseListen(loaded.policy.admin.listen!).port);
    for (const port of service!.spec.ports) expect(Object.keys(ports)).toContain(port.targetPort);
    // The admin port is for probes and scraping, not for every client of the Service.
    expect(service!.spec.ports.map((port) => port.targetPort)).toEqual(["proxy"]);
    expect(service!.spec.selector).toEqual(deployment!.spec.selector.matchLabels);
    expect(deployment!.spec.template.metadata.labels).toMatchObject(deployment!.spec.selector.matchLabels);
  });

  it("probes readiness on /readyz and liveness on /healthz through the admin port", () => {
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "admin" });
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "admin" });
    expect(deployment!.spec.replicas).toBeGreaterThan(1);
  });

  it("mounts the policy where the container reads it, the CA where the policy looks, and client tokens where they are read", () => {
    const policyPath = container.args[container.args.indexOf("--policy") + 1]!;
    const policyMount = mountFor(policyPath);
    const policyVolume = pod.volumes.find((v) => v.name === policyMount.name)!;
    expect(policyVolume.configMap?.name).toBe(configMap!.metadata.name);
    expect(policyPath.endsWith("/policy.yaml")).toBe(true);

    const caMount = mountFor(loaded.policy.ca.dir);
    const caVolume = pod.volumes.find((v) => v.name === caMount.name)!;
    expect(caVolume.emptyDir).toBeDefined(); // writable: forged certificates are cached there
    const init = pod.initContainers[0]!;
    expect(init.command.join(" ")).toContain(loaded.policy.ca.dir);
    const caSecret = secrets.find((s) => s.metadata.name === "portcullis-ca")!;
    expect(Object.keys(caSecret.stringData!)).toEqual(expect.arrayContaining(["ca.pem", "ca-key.pem", "leaf-key.pem"]));

    const tokenFile = loaded.policy.clients[0]!.token.file!;
    const tokenMount = mountFor(tokenFile);
    const tokenVolume = pod.volumes.find((v) => v.name === tokenMount.name)!;
    const clientSecret = secrets.find((s) => s.metadata.name === tokenVolume.secret!.secretName)!;
    expect(Object.keys(clientSecret.stringData!)).toContain(tokenFile.split("/").at(-1));
  });

  it("runs as non-root with a read-only root filesystem, in the image too", () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    const dockerfile = readFileSync(join(dir, "Dockerfile"), "utf8");
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^EXPOSE 8080 9090$/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/cli\.js"\]$/m);
    expect(deployment!.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(10);
  });
});
