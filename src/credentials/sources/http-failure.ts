import { endpointName, TokenFetchError, type TokenFetch, type TokenRequest, type TokenResponse } from "../token-fetch.js";
import { SourceFailed } from "./source.js";

/** An RFC 6749 / Vault-style error code is an identifier, safe to repeat; anything else in a body is not. */
const ERROR_CODE = /^[a-z][a-z0-9_.-]{0,63}$/i;

export function safeErrorCode(json: unknown): string | undefined {
  const code = (json as { error?: unknown } | undefined)?.error;
  return typeof code === "string" && ERROR_CODE.test(code) ? code : undefined;
}

/** Sends a token request; a transport failure or a status outside `ok` becomes a message naming the endpoint and the status only. */
export async function sendExpecting(fetcher: TokenFetch, what: string, req: TokenRequest, ok: (status: number) => boolean): Promise<TokenResponse> {
  let response: TokenResponse;
  try {
    response = await fetcher.send(what, req);
  } catch (error) {
    throw new SourceFailed(error instanceof TokenFetchError ? error.message : `${what}: ${endpointName(req.url)} failed`);
  }
  if (!ok(response.status)) {
    const code = safeErrorCode(response.json);
    throw new SourceFailed(`${what}: ${endpointName(req.url)} answered HTTP ${response.status}${code ? ` (${code})` : ""}`);
  }
  if (typeof response.json !== "object" || response.json === null) {
    throw new SourceFailed(`${what}: ${endpointName(req.url)} answered HTTP ${response.status} without a JSON object`);
  }
  return response;
}

/** {base}/{path}, keeping a base path such as GitHub Enterprise's /api/v3. */
export function joinUrl(base: string, path: string): URL {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`;
  url.search = "";
  return url;
}
