import { anyHostMatches } from "../policy/hosts.js";
import { pathMatches } from "../policy/paths.js";
import type { Credential } from "../policy/schema.js";
import { templateReferences } from "../policy/validate.js";
import { ProxyError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import { setHeader } from "../core/headers.js";
import type { OutgoingRequest, SecretResolver } from "../core/messages.js";
import { setQueryParam } from "./query.js";
import { SecretUnavailable } from "./secrets.js";

const UNSAFE_IN_HEADER = /[\r\n\0]/;

/** The credentials that apply to this request: host matches and, if the credential lists paths, the path too. */
export function planCredentials(credentials: readonly Credential[], host: string, pathReadings: readonly string[], scheme: "http" | "https"): Credential[] {
  return credentials.filter(
    (credential) =>
      // A secret never travels in cleartext unless the credential lists http.
      credential.schemes.includes(scheme) &&
      anyHostMatches(credential.hosts, host) &&
      // Every way the upstream might read the path must be in scope: /public/..;/admin is
      // /public/** to the rules' first reading and /admin to Tomcat.
      (!credential.paths || pathReadings.every((reading) => credential.paths!.some((glob) => pathMatches(glob, reading)))),
  );
}

/** Fills ${secrets.NAME} in a template; returns the text and the secret values it used. */
export async function renderTemplate(template: string, secrets: SecretResolver): Promise<{ text: string; values: string[] }> {
  const { secrets: names } = templateReferences(template);
  const values = new Map<string, string>();
  for (const name of names) values.set(name, await secrets.resolve(name));
  const text = template.replace(/\$\{\s*secrets\.([A-Za-z0-9][A-Za-z0-9_.-]*)\s*\}/g, (_, name: string) => values.get(name)!);
  return { text, values: [...values.values()] };
}

export function credentialUnavailable(what: string, error: unknown): ProxyError {
  const reason = error instanceof SecretUnavailable ? error.message : "its secret could not be resolved";
  return new ProxyError("credential_unavailable", `${what}: ${reason}`);
}

export function assertHeaderSafe(what: string, value: string): void {
  if (UNSAFE_IN_HEADER.test(value)) {
    throw new ProxyError("credential_unavailable", `${what}: the secret contains a line break or NUL and cannot be sent in a header`);
  }
}

/**
 * The credential stage: puts the real credentials on the outgoing request. A header
 * credential replaces whatever the client sent under that name (the agent's value never
 * travels next to the real one); a query credential sets or replaces its parameter. Any
 * secret that cannot be resolved fails the request with 502 credential_unavailable: it is
 * never forwarded without its credential.
 */
export async function injectCredentials(plan: readonly Credential[], exchange: Exchange, outgoing: OutgoingRequest, secrets: SecretResolver): Promise<void> {
  for (const credential of plan) {
    // A signing credential is applied by the aws-sigv4 stage, once the request is final.
    if (credential.aws_sigv4) continue;
    const what = `credential "${credential.name}"`;
    let rendered: { text: string; values: string[] };
    try {
      rendered = await renderTemplate((credential.header ?? credential.query)!.value, secrets);
    } catch (error) {
      throw credentialUnavailable(what, error);
    }
    if (credential.header) {
      assertHeaderSafe(what, rendered.text);
      outgoing.headers = setHeader(outgoing.headers, credential.header.name, rendered.text);
      exchange.redactedHeaders.add(credential.header.name.toLowerCase());
    } else {
      outgoing.path = setQueryParam(outgoing.path, credential.query!.name, rendered.text);
    }
    exchange.credentials.push(credential.name);
    exchange.injectedSecrets.push(...rendered.values);
  }
}
