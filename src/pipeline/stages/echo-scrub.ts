import { ProxyError, errorAnswer } from "../../core/errors.js";
import { restrictAcceptEncoding } from "../../core/headers.js";
import { EchoScrubber, scrubBytes, scrubHeaderValues } from "../../credentials/echo-scrub.js";
import { awsSecretName } from "../../credentials/sigv4/sources.js";
import { anyHostMatches } from "../../policy/hosts.js";
import type { Policy } from "../../policy/schema.js";
import { templateReferences } from "../../policy/validate.js";
import { recordError } from "../answer-error.js";
import type { Flow, Stage, WholeAnswer } from "../stage.js";

/** The secrets a policy's credentials and placeholders scope to each host, by name (a policy is immutable: kept per policy). */
const scopedNames = new WeakMap<Policy, Map<string, string[]>>();

function secretNamesScopedTo(policy: Policy, host: string): string[] {
  let byHost = scopedNames.get(policy);
  if (!byHost) scopedNames.set(policy, (byHost = new Map()));
  let names = byHost.get(host);
  if (names) return names;
  const found = new Set<string>();
  for (const credential of policy.credentials) {
    if (!anyHostMatches(credential.hosts, host)) continue;
    if (credential.aws_sigv4) {
      // What a signed request carries: the key id and the session token (the secret key itself never travels).
      found.add(awsSecretName(credential.name, "access_key_id"));
      if (credential.aws_sigv4.session_token) found.add(awsSecretName(credential.name, "session_token"));
      continue;
    }
    const template = (credential.header ?? credential.query)?.value;
    if (template) for (const name of templateReferences(template).secrets) found.add(name);
  }
  for (const placeholder of policy.placeholders) if (anyHostMatches(placeholder.hosts, host)) found.add(placeholder.secret);
  names = [...found];
  // Bounded: hosts come from clients.
  if (byHost.size < 10_000) byHost.set(host, names);
  return names;
}

/**
 * What an answer from this host may echo: the secrets put on this request, and every known
 * value of a secret scoped to the host even when this request did not carry it. An upstream
 * that stored one (a note, a webhook's config, another client's request) hands it back later.
 */
function secretsAtStake(flow: Flow): readonly string[] {
  const { exchange, state } = flow;
  let scoped = flow.notes.scopedSecrets;
  if (!scoped) {
    scoped = [];
    for (const name of secretNamesScopedTo(state.policy, exchange.target.host)) {
      const value = state.secrets.known(name);
      if (value !== undefined) scoped.push(value);
    }
    flow.notes.scopedSecrets = scoped;
  }
  if (scoped.length === 0) return exchange.injectedSecrets;
  const injected = exchange.injectedSecrets;
  return injected.length === 0 ? scoped : [...new Set([...injected, ...scoped])];
}

/**
 * Echo scrubbing: a secret portcullis put on a request, or one scoped to its host, that the
 * upstream sends back (in a header, a trailer or the body, whatever its content type, in every
 * spelling a client might decode) reaches the client as [REDACTED]. A body that cannot be
 * decoded is refused.
 */
export const echoScrub: Stage = {
  name: "echo-scrub",
  // Always runs (no `active`): whatever stage put a secret on the request, its echo is scrubbed; with none it checks one length.
  beforeForward(flow: Flow) {
    if (secretsAtStake(flow).length) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseHeaders(flow: Flow, answer) {
    const secrets = secretsAtStake(flow);
    if (secrets.length) answer.headers = scrubHeaderValues(answer.headers, secrets);
  },
  responseTrailers(flow: Flow, trailers) {
    const secrets = secretsAtStake(flow);
    return secrets.length && trailers.length ? scrubHeaderValues(trailers, secrets) : trailers;
  },
  // A WebSocket to a host that got a secret could echo it in a message: such sessions are read.
  webSocketSession: (flow: Flow) => secretsAtStake(flow).length > 0,
  webSocketMessage(flow: Flow, message) {
    if (message.from !== "upstream") return [message];
    const { data, replaced } = scrubBytes(message.data, secretsAtStake(flow));
    if (replaced && flow.exchange.ws?.messages) flow.exchange.ws.messages.scrubbed++;
    message.data = data;
    return [message];
  },
  // Pings, pongs and close reasons are the upstream's words too.
  webSocketControl(flow: Flow, from, payload) {
    if (from !== "upstream" || payload.length === 0) return payload;
    const secrets = secretsAtStake(flow);
    return secrets.length ? scrubBytes(payload, secrets).data : payload;
  },
  responseBody(flow: Flow) {
    const { exchange } = flow;
    const secrets = secretsAtStake(flow);
    if (secrets.length === 0) return undefined;
    return {
      transform: new EchoScrubber(secrets),
      undecodable(): WholeAnswer {
        const error = new ProxyError("upstream_protocol_error", "response Content-Encoding cannot be checked for echoed credentials");
        recordError(exchange, error);
        const answer = errorAnswer(error, exchange.requestId, exchange.scrub);
        return { status: answer.status, reason: undefined, headers: Object.entries(answer.headers).flat(), body: Buffer.from(answer.body) };
      },
    };
  },
};
