/** Hosts a sandbox reaches directly by default: its own loopback, never worth a proxy hop. */
export const DEFAULT_NO_PROXY = "localhost,127.0.0.1,::1";

export interface TrustSettings {
  /** Absolute path of the CA certificate (PEM) the sandbox must trust. */
  caFile: string;
  /** The proxy as sandboxes reach it, e.g. http://127.0.0.1:8080 (credentials allowed in it). */
  proxyUrl: string;
  noProxy: string;
  java?: { truststore: string; password: string };
}

/** Java takes the proxy as separate host and port properties; a URL's credentials it cannot use. */
function javaToolOptions(settings: TrustSettings, java: { truststore: string; password: string }): string {
  const proxy = new URL(settings.proxyUrl);
  const host = proxy.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = proxy.port || "80";
  const nonProxy = settings.noProxy
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean)
    .join("|");
  const properties = [
    `-Djavax.net.ssl.trustStore=${java.truststore}`,
    "-Djavax.net.ssl.trustStoreType=PKCS12",
    `-Djavax.net.ssl.trustStorePassword=${java.password}`,
    `-Dhttps.proxyHost=${host}`,
    `-Dhttps.proxyPort=${port}`,
    `-Dhttp.proxyHost=${host}`,
    `-Dhttp.proxyPort=${port}`,
  ];
  if (nonProxy) properties.push(`-Dhttp.nonProxyHosts=${nonProxy}`);
  // JAVA_TOOL_OPTIONS splits on spaces; a value with one would be read as two options.
  for (const property of properties) {
    if (/\s/.test(property)) throw new Error(`cannot put "${property}" in JAVA_TOOL_OPTIONS: it contains whitespace`);
  }
  return properties.join(" ");
}

/**
 * Every variable a sandbox sets to use the proxy and trust its CA (SPEC section 12), for the
 * toolchains that read one. Both cases of the proxy variables: curl reads only lowercase
 * http_proxy (httpoxy), other tools only uppercase. Node >= 24 (and 22.21) uses the proxy
 * variables for fetch and https with NODE_USE_ENV_PROXY=1; on Node 20 use undici's EnvHttpProxyAgent.
 */
export function trustEnvironment(settings: TrustSettings): Record<string, string> {
  const { caFile, proxyUrl, noProxy } = settings;
  const env: Record<string, string> = {
    HTTPS_PROXY: proxyUrl,
    https_proxy: proxyUrl,
    HTTP_PROXY: proxyUrl,
    http_proxy: proxyUrl,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
    NODE_EXTRA_CA_CERTS: caFile,
    NODE_USE_ENV_PROXY: "1",
    REQUESTS_CA_BUNDLE: caFile,
    SSL_CERT_FILE: caFile,
    CURL_CA_BUNDLE: caFile,
    GIT_SSL_CAINFO: caFile,
    PIP_CERT: caFile,
    NPM_CONFIG_CAFILE: caFile,
    CARGO_HTTP_CAINFO: caFile,
    AWS_CA_BUNDLE: caFile,
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: caFile,
    DENO_CERT: caFile,
  };
  if (settings.java) env.JAVA_TOOL_OPTIONS = javaToolOptions(settings, settings.java);
  return env;
}

/** A value in single quotes for a POSIX shell: nothing inside is expanded; a ' is closed, escaped, reopened. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** `export NAME='value'` lines that a shell can eval. */
export function shellExports(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([name, value]) => `export ${name}=${shellQuote(value)}\n`)
    .join("");
}

/** The proxy's URL from a listen address: a wildcard becomes loopback, an IPv6 literal gets brackets. */
export function proxyUrlFromListen(listen: string): { url: string; wildcard: boolean } {
  const match = /^(.*):(\d+)$/.exec(listen);
  const rawHost = match ? match[1]! : listen;
  const port = match ? match[2]! : "8080";
  const host = rawHost.replace(/^\[(.*)\]$/, "$1");
  const wildcard = host === "0.0.0.0" || host === "::" || host === "";
  const shown = wildcard ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  return { url: `http://${shown}:${port}`, wildcard };
}
