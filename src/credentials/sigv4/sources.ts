import type { Credential, SecretSource } from "../../policy/schema.js";

export type AwsKeyPart = "access_key_id" | "secret_access_key" | "session_token";

/**
 * The name an aws_sigv4 credential's inline secret source is kept under in the SecretStore.
 * A ':' cannot occur in a policy name, so it never collides with a secret of the policy's own.
 */
export function awsSecretName(credential: string, part: AwsKeyPart): string {
  return `aws_sigv4:${credential}.${part}`;
}

/** The inline secret sources of every aws_sigv4 credential, by their SecretStore names. */
export function awsSecretSources(credentials: readonly Credential[]): Record<string, SecretSource> {
  const sources: Record<string, SecretSource> = {};
  for (const credential of credentials) {
    const keys = credential.aws_sigv4;
    if (!keys) continue;
    sources[awsSecretName(credential.name, "access_key_id")] = keys.access_key_id;
    sources[awsSecretName(credential.name, "secret_access_key")] = keys.secret_access_key;
    if (keys.session_token) sources[awsSecretName(credential.name, "session_token")] = keys.session_token;
  }
  return sources;
}
