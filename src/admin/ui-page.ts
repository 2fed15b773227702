/**
 * The /ui page: one self-contained document (inline style and script under a per-response
 * CSP nonce, nothing fetched from elsewhere, no build step). Every value from the stream is
 * put in the DOM as text, never as markup: host names and paths come from the sandbox.
 */
export function uiPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>portcullis live</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">
  :root { color-scheme: light dark; --deny: #c62828; --warn: #b26a00; --ok: #2e7d32; --line: #8884; }
  body { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; margin: 0; }
  header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1em; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 15px; margin: 0; }
  .pill { padding: 0 .5em; border-radius: 1em; border: 1px solid var(--line); }
  #conn.live { color: var(--ok); } #conn.down { color: var(--deny); }
  form { display: flex; gap: 1em; padding: .5em 1em; flex-wrap: wrap; border-bottom: 1px solid var(--line); }
  input[type=text] { width: 11em; font: inherit; }
  main { display: grid; grid-template-columns: 1fr 22em; gap: 1em; padding: .5em 1em; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .15em .5em; border-bottom: 1px solid var(--line); white-space: nowrap; }
  td.c-url, td.c-why { white-space: normal; word-break: break-all; }
  tr.deny td.c-decision, tr.deny td.c-why { color: var(--deny); font-weight: bold; }
  tr.s5 td.c-status { color: var(--deny); } tr.s4 td.c-status { color: var(--warn); } tr.s2 td.c-status { color: var(--ok); }
  aside h2 { font-size: 13px; margin: 1em 0 .3em; }
  .num { text-align: right; }
  #budgets[hidden] { display: none; }
</style>
</head>
<body>
<header>
  <h1>portcullis · live</h1>
  <span id="conn" class="pill down">connecting</span>
  <span>events <b id="stat-total">0</b></span>
  <span>open tunnels <b id="stat-tunnels">-</b></span>
  <span>open WebSockets <b id="stat-websockets">-</b></span>
  <span>shown <b id="stat-shown">0</b></span>
</header>
<form id="filters" autocomplete="off">
  <label><input type="checkbox" id="filter-denied"> denied only</label>
  <label>host <input type="text" id="filter-host" placeholder="api.github.com, *.example.com"></label>
  <label>client <input type="text" id="filter-client"></label>
  <label>status <input type="text" id="filter-status" placeholder="4xx,5xx or 403"></label>
</form>
<main>
  <section>
    <table id="exchanges">
      <thead><tr><th>time</th><th>client</th><th>decision</th><th>status</th><th>method</th><th>host + path</th><th class="num">ms</th><th class="num">bytes ↑/↓</th><th>rule / reason</th></tr></thead>
      <tbody id="rows"></tbody>
    </table>
  </section>
  <aside>
    <h2>clients</h2>
    <table id="by-client"><thead><tr><th>client</th><th class="num">total</th><th class="num">denied</th><th class="num">errors</th></tr></thead><tbody></tbody></table>
    <h2>hosts</h2>
    <table id="by-host"><thead><tr><th>host</th><th class="num">total</th><th class="num">denied</th><th class="num">errors</th></tr></thead><tbody></tbody></table>
    <section id="budgets" hidden>
      <h2>budgets</h2>
      <table><thead><tr><th>rule</th><th>client</th><th class="num">tokens</th><th class="num">requests</th></tr></thead><tbody></tbody></table>
    </section>
  </aside>
</main>
<script nonce="${nonce}">
"use strict";
const KEEP = 1000;
const entries = [];
const $ = (id) => document.getElementById(id);
const rows = $("rows");
const filters = { denied: $("filter-denied"), host: $("filter-host"), client: $("filter-client"), status: $("filter-status") };

function hostMatches(pattern, host) {
  pattern = pattern.trim().toLowerCase();
  host = String(host || "").toLowerCase().replace(/\\.$/, "");
  if (pattern.startsWith("*.")) return host.endsWith(pattern.slice(1));
  return host === pattern;
}
function statusMatches(spec, status) {
  if (status === null || status === undefined) return false;
  return spec.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean).some((wanted) =>
    /^[1-5]xx$/.test(wanted) ? Math.floor(status / 100) === Number(wanted[0]) : Number(wanted) === status);
}
function shown(e) {
  if (filters.denied.checked && e.decision !== "deny") return false;
  const client = filters.client.value.trim();
  if (client && e.client !== client) return false;
  const host = filters.host.value.trim();
  if (host && !hostMatches(host, e.host)) return false;
  const status = filters.status.value.trim();
  if (status && !statusMatches(status, e.status)) return false;
  return true;
}
function cell(tr, cls, text) {
  const td = document.createElement("td");
  td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
}
function why(e) {
  if (e.decision === "deny" || e.error) return (e.rule ? "[" + e.rule + "] " : "") + (e.reason || (e.error && e.error.message) || "");
  return e.rule || "";
}
function url(e) {
  const defaultPort = e.scheme === "http" ? 80 : 443;
  const authority = e.port && e.port !== defaultPort ? e.host + ":" + e.port : e.host;
  return authority + (e.path || "");
}
function row(e) {
  const tr = document.createElement("tr");
  tr.className = "row " + (e.decision === "deny" ? "deny" : "allow") + (e.status ? " s" + Math.floor(e.status / 100) : "");
  tr.dataset.id = e.id;
  tr.dataset.decision = e.decision;
  cell(tr, "c-time", new Date(e.time).toLocaleTimeString([], { hour12: false }));
  cell(tr, "c-client", e.client || "-");
  cell(tr, "c-decision", e.decision);
  cell(tr, "c-status", e.status === null || e.status === undefined ? "---" : String(e.status));
  cell(tr, "c-method", e.msg === "websocket" ? "WS" : e.method || e.msg);
  cell(tr, "c-url", url(e));
  cell(tr, "c-duration num", typeof e.duration_ms === "number" ? String(Math.round(e.duration_ms)) : String(e.duration_ms));
  cell(tr, "c-bytes num", e.req_bytes + " / " + e.resp_bytes);
  cell(tr, "c-why", why(e));
  return tr;
}
function render() {
  const fragment = document.createDocumentFragment();
  let count = 0;
  for (let i = entries.length - 1; i >= 0; i--) if (shown(entries[i])) { fragment.appendChild(row(entries[i])); count++; }
  rows.replaceChildren(fragment);
  $("stat-shown").textContent = String(count);
}
function add(e) {
  entries.push(e);
  if (entries.length > KEEP) {
    const gone = entries.shift();
    const old = rows.querySelector('tr[data-id="' + gone.id + '"]');
    if (old) old.remove();
  }
  if (shown(e)) {
    rows.insertBefore(row(e), rows.firstChild);
    $("stat-shown").textContent = String(rows.children.length);
  }
}
function tally(table, list) {
  const body = table.tBodies[0];
  body.replaceChildren(...list.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.name = t.name;
    cell(tr, "name", t.name);
    cell(tr, "total num", String(t.total));
    cell(tr, "denied num", String(t.denied));
    cell(tr, "errors num", String(t.errors));
    return tr;
  }));
}
function stats(s) {
  $("stat-total").textContent = String(s.total);
  $("stat-tunnels").textContent = s.open_tunnels === null ? "?" : String(s.open_tunnels);
  $("stat-websockets").textContent = s.open_websockets === null ? "?" : String(s.open_websockets);
  tally($("by-client"), s.clients);
  tally($("by-host"), s.hosts);
}
async function budgets() {
  try {
    const answer = await fetch("/ui/budgets", { credentials: "same-origin", cache: "no-store" });
    if (answer.status !== 200) return;
    const list = await answer.json();
    if (!Array.isArray(list)) return;
    const section = $("budgets");
    section.hidden = false;
    section.querySelector("tbody").replaceChildren(...list.map((b) => {
      const tr = document.createElement("tr");
      cell(tr, "rule", b.rule);
      cell(tr, "client", b.client || "-");
      cell(tr, "num", b.limit_tokens ? b.tokens + " / " + b.limit_tokens : String(b.tokens ?? "-"));
      cell(tr, "num", b.limit_requests ? b.requests + " / " + b.limit_requests : String(b.requests ?? "-"));
      return tr;
    }));
  } catch (_) { /* no budgets */ }
}
for (const input of Object.values(filters)) input.addEventListener("input", render);
$("filters").addEventListener("submit", (event) => event.preventDefault());
const source = new EventSource("/ui/events");
source.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "pill live"; });
source.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "pill down"; });
source.addEventListener("record", (event) => add(JSON.parse(event.data)));
source.addEventListener("stats", (event) => { stats(JSON.parse(event.data)); void budgets(); });
</script>
</body>
</html>
`;
}
