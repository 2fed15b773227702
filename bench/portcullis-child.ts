// portcullis in a process of its own, as in production: the BUILT code (dist/, what `npm run
// build` emits and `portcullis start` runs), same createProxy and V8 heap setting the CLI's `start` uses, the audit
// log written to the file the policy names. Prints nothing; reports over IPC.
// Usage: node --import tsx bench/portcullis-child.ts POLICY_FILE   (after `npm run build`)
// (tsx only compiles this small wrapper; everything measured is plain JavaScript from dist/.)
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { serveParent } from "./lib.js";

// Imported at run time from dist/; typed from src/, so type-checking bench/ needs no build.
type Portcullis = typeof import("../src/index.js");
const { createProxy, headroomFromEnv, keepHeapHeadroom, parsePolicy } = (await import(new URL("../dist/index.js", import.meta.url).href)) as Portcullis;

const [policyFile] = process.argv.slice(2);
if (!policyFile) throw new Error("usage: portcullis-child.ts POLICY_FILE");
const file = resolve(policyFile);
const loaded = parsePolicy(await readFile(file, "utf8"), file, dirname(file));
const proxy = await createProxy({ policy: loaded, listen: "127.0.0.1:0" });
keepHeapHeadroom({ headroomBytes: headroomFromEnv(process.env.PORTCULLIS_HEAP_HEADROOM_MIB) });
const address = await proxy.listen();

serveParent(
  { type: "ready", port: address.port, caPem: proxy.caCertPem },
  {
    stats: () => ({ type: "stats", certificates: { ...proxy.certificateStats }, memory: process.memoryUsage().rss }),
    // Memory that is held, not garbage yet to be collected: needs --expose-gc (bench/churn.ts).
    retained: () => {
      (globalThis as { gc?: () => void }).gc?.();
      const { rss, heapUsed, external } = process.memoryUsage();
      return { type: "retained", rss, heapUsed, external };
    },
  },
  () => proxy.close({ graceMs: 1000 }),
);
