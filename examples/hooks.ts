/**
 * portcullis as a library: a proxy with hooks at three stages of the pipeline.
 *
 *   npm run build && node --import tsx examples/hooks.ts
 *   curl --cacert certs/ca.pem -x http://127.0.0.1:8181 https://example.com/
 */
import { createProxy, type RequestContext, type ResponseContext } from "portcullis";

const proxy = await createProxy({
  policy: {
    version: 1,
    proxy: { listen: "127.0.0.1:8181" },
    network: {
      default: "deny",
      rules: [{ name: "example", action: "allow", hosts: ["example.com", "*.example.com"] }],
    },
  },
  hooks: {
    // After the policy allowed the request, before any secret is put on it.
    onRequest(ctx: RequestContext) {
      if (ctx.method === "DELETE") ctx.deny("this sandbox may not delete anything");
      ctx.headers.set("X-Sandbox-Request", ctx.requestId);
    },
    // The upstream's status and headers, before the client sees them; the body streams on.
    onResponse(ctx: ResponseContext) {
      ctx.headers.remove("Set-Cookie");
    },
  },
});

// Hooks can also be added later, and for WebSocket handshakes.
proxy.onWebSocket((ctx) => {
  if (!ctx.path.startsWith("/ws/")) ctx.deny("WebSockets only under /ws/");
});

const address = await proxy.listen();
console.error(`portcullis (library) listening on ${address.address}:${address.port}`);
process.once("SIGINT", () => void proxy.close().then(() => process.exit(0)));
