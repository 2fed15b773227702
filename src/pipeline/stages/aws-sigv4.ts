import { Readable } from "node:stream";
import { ProxyError } from "../../core/errors.js";
import { getHeader, restrictAcceptEncoding } from "../../core/headers.js";
import { credentialUnavailable, planCredentials } from "../../credentials/inject.js";
import { ChunkResigner } from "../../credentials/sigv4/chunks.js";
import { chunkSigner, needsBodyHash, resignRequest, SIGNED_STREAMING, SIGNED_STREAMING_TRAILER, type AwsKeys, type Resigned } from "../../credentials/sigv4/sign.js";
import { awsSecretName } from "../../credentials/sigv4/sources.js";
import type { Credential } from "../../policy/schema.js";
import type { Flow, Stage } from "../stage.js";
import { enabledCredentials } from "./credentials.js";

/** The aws_sigv4 credential of this request: the first that matches (a request carries one signature). */
function awsCredential(flow: Flow): Credential | undefined {
  const { state, exchange } = flow;
  if (!state.policy.credentials.some((credential) => credential.aws_sigv4)) return undefined;
  // Only a credential this client may have (a registered client gets the ones it was given).
  return planCredentials(enabledCredentials(flow), exchange.target.host, exchange.pathReadings, exchange.target.scheme).find((credential) => credential.aws_sigv4);
}

async function resolveKeys(flow: Flow, credential: Credential): Promise<AwsKeys> {
  const { secrets } = flow.state;
  try {
    return {
      accessKeyId: await secrets.resolve(awsSecretName(credential.name, "access_key_id")),
      secretAccessKey: await secrets.resolve(awsSecretName(credential.name, "secret_access_key")),
      sessionToken: credential.aws_sigv4!.session_token ? await secrets.resolve(awsSecretName(credential.name, "session_token")) : undefined,
    };
  } catch (error) {
    throw credentialUnavailable(`credential "${credential.name}"`, error);
  }
}

/** The client's body (whatever of it a stage already read, then the rest) with its chunk signatures rewritten. */
function resignedBody(flow: Flow, keys: AwsKeys, seed: NonNullable<Resigned["seed"]>): Readable {
  const { outgoing, request } = flow;
  const trailer = getHeader(outgoing.headers, "x-amz-content-sha256") === SIGNED_STREAMING_TRAILER;
  const resigner = new ChunkResigner(seed.signature, chunkSigner(keys, seed), trailer);
  // forward answers a malformed body; until it listens (or if the client left first), an error must not go unhandled.
  resigner.on("error", () => undefined);
  const start = outgoing.body;
  const continues = start === undefined || outgoing.bodyContinues === true;
  outgoing.body = undefined;
  outgoing.bodyContinues = undefined;
  // forward counts the whole rewritten body, the start it already counted included.
  flow.exchange.reqBytes = 0;
  if (start) resigner.write(start);
  if (continues) {
    request.body.on("error", (error) => resigner.destroy(error));
    request.body.pipe(resigner);
    // Paused after its start was read for the stages (readBodyStart): it flows on through the resigner.
    request.body.resume();
  } else {
    resigner.end();
  }
  return resigner;
}

/** The request signed again, as it will be forwarded, with the credential's real keys. */
async function resignForUpstream(flow: Flow, credential: Credential): Promise<void> {
  const { exchange, outgoing } = flow;
  const keys = await resolveKeys(flow, credential);
  exchange.credentials.push(credential.name);
  // The access key id and session token travel, and AWS's error answers echo them.
  exchange.injectedSecrets.push(keys.accessKeyId, ...(keys.sessionToken ? [keys.sessionToken] : []));
  exchange.redactedHeaders.add("authorization");
  exchange.redactedHeaders.add("x-amz-security-token");
  outgoing.headers = restrictAcceptEncoding(outgoing.headers);
  let resigned: Resigned;
  try {
    resigned = await resignRequest({ method: outgoing.method, target: outgoing.path, headers: outgoing.headers, body: outgoing.body }, keys);
  } catch (error) {
    if (error instanceof ProxyError) throw error;
    throw new ProxyError("credential_unavailable", `credential "${credential.name}": the request could not be signed (${error instanceof Error ? error.message : String(error)})`);
  }
  outgoing.path = resigned.target;
  outgoing.headers = resigned.headers;
  const payload = getHeader(outgoing.headers, "x-amz-content-sha256");
  if (resigned.seed && outgoing.hasBody && (payload === SIGNED_STREAMING || payload === SIGNED_STREAMING_TRAILER)) {
    outgoing.bodyStream = resignedBody(flow, keys, resigned.seed);
  }
}

/**
 * AWS Signature Version 4 re-signing (credential `aws_sigv4`): the sandbox signs with a
 * placeholder key, and the request is signed again, as forwarded, with the real one. It runs
 * last, so what it signs is what every other stage left on the request.
 */
export const awsSigv4: Stage = {
  name: "aws-sigv4",
  active: (state) => state.policy.credentials.some((credential) => credential.aws_sigv4),
  requestHeaders(flow: Flow) {
    const { outgoing } = flow;
    if (flow.upgrade || !outgoing.hasBody || !awsCredential(flow)) return;
    // The payload hash is in the signature: without X-Amz-Content-Sha256 it is computed from the whole body.
    if (needsBodyHash(outgoing.headers, outgoing.path)) flow.readBody = true;
  },
  // Synchronous when no aws_sigv4 credential applies (nearly every request): the runner then has nothing to await.
  beforeForward(flow: Flow) {
    const credential = awsCredential(flow);
    if (credential) return resignForUpstream(flow, credential);
  },
};
