import { EventEmitter } from "node:events";
import { Agent as HttpsAgent } from "node:https";
import { HttpsProxyAgent } from "https-proxy-agent";
import { ProxyAgent } from "undici";
import { createProxy, type Proxy } from "../../src/proxy/create-proxy.js";
import { parsePolicy } from "../../src/policy/load.js";
import type { ClientTimeouts } from "../../src/transport/runtime.js";
import { tempDir } from "./pki.js";

export type AuditLine = Record<string, unknown> & { msg: string; level: number };

/** Collects audit lines as the proxy writes them; tests wait on events, never on time. */
export class AuditCapture extends EventEmitter {
  readonly lines: AuditLine[] = [];
  readonly raw: string[] = [];

  write(line: string): void {
    this.raw.push(line);
    const parsed = JSON.parse(line) as AuditLine;
    this.lines.push(parsed);
    this.emit("line", parsed);
  }

  waitFor(predicate: (line: AuditLine) => boolean, timeoutMs = 10_000): Promise<AuditLine> {
    const found = this.lines.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("line", onLine);
        reject(new Error(`no matching audit line within ${timeoutMs} ms; saw:\n${this.raw.join("")}`));
      }, timeoutMs);
      const onLine = (line: AuditLine) => {
        if (!predicate(line)) return;
        clearTimeout(timer);
        this.off("line", onLine);
        resolve(line);
      };
      this.on("line", onLine);
    });
  }
}

export interface TestProxy {
  proxy: Proxy;
  port: number;
  url: string;
  caPem: string;
  caDir: string;
  audit: AuditCapture;
  diagnostics: AuditCapture;
  /** undici dispatcher through the proxy, trusting its CA. */
  dispatcher: ProxyAgent;
  /** node:https agent through the proxy (for https.request and ws). */
  agent(): HttpsAgent;
  close(): Promise<void>;
}

/** Starts portcullis in-process on 127.0.0.1:0 with the given policy YAML (ca.dir is filled in). */
export async function startProxy(policyYaml: string, options: { timeouts?: Partial<ClientTimeouts>; caDir?: string; adminListen?: string } = {}): Promise<TestProxy> {
  const caDir = options.caDir ?? tempDir("proxy-ca");
  const loaded = parsePolicy(`${policyYaml}\nca: { dir: ${JSON.stringify(caDir)} }\n`, "test-policy.yaml");
  const audit = new AuditCapture();
  const diagnostics = new AuditCapture();
  const proxy = await createProxy({ policy: loaded, listen: "127.0.0.1:0", auditStream: audit, diagnosticsStream: diagnostics, timeouts: options.timeouts, adminListen: options.adminListen ?? null });
  const address = await proxy.listen();
  const url = `http://127.0.0.1:${address.port}`;
  const dispatcher = new ProxyAgent({ uri: url, requestTls: { ca: proxy.caCertPem } });
  const agents: HttpsAgent[] = [];
  return {
    proxy,
    port: address.port,
    url,
    caPem: proxy.caCertPem,
    caDir,
    audit,
    diagnostics,
    dispatcher,
    agent() {
      const agent = new HttpsProxyAgent(url, { keepAlive: true });
      agents.push(agent);
      return agent;
    },
    async close() {
      for (const agent of agents) agent.destroy();
      await dispatcher.close();
      await proxy.close({ graceMs: 1000 });
    },
  };
}

/**
 * A policy for tests of forwarding itself: trusts the upstream test CA and lets everything
 * through to the loopback test servers (network rules have tests of their own).
 */
export function policyTrusting(caFile: string, extra = "", network = "network:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n"): string {
  return `version: 1\nupstream:\n  trust: [${JSON.stringify(caFile)}]\n  connect_timeout: 2s\n  response_timeout: 5s\n${network}${extra}`;
}
