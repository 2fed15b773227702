import ipaddr from "ipaddr.js";
import type { Policy } from "./schema.js";
import { secretReferenceIssues } from "./secret-references.js";

export interface SemanticIssue {
  path: (string | number)[];
  message: string;
}

const TEMPLATE = /\$\{([^}]*)\}/g;
const SECRET_REF = /^secrets\.([A-Za-z0-9][A-Za-z0-9_.-]*)$/;

/** The secret names a credential value refers to, or the malformed references in it. */
export function templateReferences(value: string): { secrets: string[]; malformed: string[] } {
  const secrets: string[] = [];
  const malformed: string[] = [];
  for (const match of value.matchAll(TEMPLATE)) {
    const ref = SECRET_REF.exec(match[1]!.trim());
    if (ref) secrets.push(ref[1]!);
    else malformed.push(match[0]);
  }
  return { secrets, malformed };
}

export function isIpOrCidr(text: string): boolean {
  try {
    if (text.includes("/")) ipaddr.parseCIDR(text);
    else ipaddr.parse(text);
    return true;
  } catch {
    return false;
  }
}

function duplicates<T extends { name: string }>(items: T[], section: string[], issues: SemanticIssue[]): void {
  const seen = new Set<string>();
  items.forEach((item, index) => {
    if (seen.has(item.name)) issues.push({ path: [...section, index, "name"], message: `duplicate name "${item.name}" in ${section.join(".")}` });
    seen.add(item.name);
  });
}

/** Checks that need the whole policy: references between sections, addresses, uniqueness. */
export function validateSemantics(policy: Policy): SemanticIssue[] {
  const issues: SemanticIssue[] = [];
  const secretNames = new Set(Object.keys(policy.secrets));
  const clientNames = new Set(policy.clients.map((client) => client.name));

  duplicates(policy.clients, ["clients"], issues);
  duplicates(policy.credentials, ["credentials"], issues);
  duplicates(policy.placeholders, ["placeholders"], issues);
  duplicates(policy.network.rules, ["network", "rules"], issues);
  duplicates(policy.mcp, ["mcp"], issues);
  duplicates(policy.budgets.rules, ["budgets", "rules"], issues);

  policy.credentials.forEach((credential, index) => {
    // A signing credential names its secret sources inline: there is no template to check.
    if (credential.aws_sigv4) return;
    const part = credential.header ? "header" : "query";
    const value = (credential.header ?? credential.query)!.value;
    const { secrets, malformed } = templateReferences(value);
    for (const bad of malformed) issues.push({ path: ["credentials", index, part, "value"], message: `malformed template ${bad}: expected \${secrets.NAME}` });
    for (const secret of secrets) {
      if (!secretNames.has(secret)) issues.push({ path: ["credentials", index, part, "value"], message: `\${secrets.${secret}} names a secret that is not defined under secrets` });
    }
    if (secrets.length === 0 && malformed.length === 0) {
      issues.push({ path: ["credentials", index, part, "value"], message: "a credential value must use at least one ${secrets.NAME}" });
    }
  });

  const placeholders = new Set<string>();
  policy.placeholders.forEach((placeholder, index) => {
    if (!secretNames.has(placeholder.secret)) {
      issues.push({ path: ["placeholders", index, "secret"], message: `secret "${placeholder.secret}" is not defined under secrets` });
    }
    if (placeholders.has(placeholder.placeholder)) issues.push({ path: ["placeholders", index, "placeholder"], message: "placeholder text used twice" });
    placeholders.add(placeholder.placeholder);
  });

  policy.network.rules.forEach((rule, index) => {
    rule.clients?.forEach((client, clientIndex) => {
      if (!clientNames.has(client)) issues.push({ path: ["network", "rules", index, "clients", clientIndex], message: `client "${client}" is not defined under clients` });
    });
  });
  policy.budgets.rules.forEach((rule, index) => {
    rule.clients?.forEach((client, clientIndex) => {
      if (!clientNames.has(client)) issues.push({ path: ["budgets", "rules", index, "clients", clientIndex], message: `client "${client}" is not defined under clients` });
    });
  });

  policy.network.allow_ips.forEach((entry, index) => {
    if (!isIpOrCidr(entry)) issues.push({ path: ["network", "allow_ips", index], message: `"${entry}" is not an IP address or CIDR` });
  });

  for (const [host, address] of Object.entries(policy.upstream.resolve)) {
    if (!ipaddr.isValid(address)) issues.push({ path: ["upstream", "resolve", host], message: `"${address}" is not an IP address` });
  }
  issues.push(...secretReferenceIssues(policy));
  return issues;
}
