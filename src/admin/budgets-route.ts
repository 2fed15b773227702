import type { BudgetLedger } from "../budgets/ledger.js";
import type { AdminRoute } from "./server.js";
import { bearerToken, tokenMatches } from "./token-check.js";

/** GET /budgets: every live counter, `[{rule, client, window_start, tokens, requests, limit_tokens, limit_requests}]`; 404 when the policy has no budgets. */
export function budgetsRoute(ledger: () => BudgetLedger | undefined, adminToken: () => Promise<string | undefined>): AdminRoute {
  return {
    path: "/budgets",
    methods: ["GET", "HEAD"],
    async handle(req, res) {
      // Per-client counters are the admin API's, like /v1/clients and /ui: the admin token when one is set.
      const token = await adminToken().catch(() => "");
      if (token !== undefined && !tokenMatches(bearerToken(req), token)) {
        res.writeHead(401, { "Content-Type": "application/json", "WWW-Authenticate": 'Bearer realm="portcullis admin"' }).end(JSON.stringify({ error: { type: "unauthorized", message: "/budgets needs Authorization: Bearer ADMIN_TOKEN" } }));
        return;
      }
      const current = ledger();
      if (!current) {
        res.writeHead(404, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { type: "not_found", message: "no budgets are configured (budgets.rules is empty)" } }));
        return;
      }
      try {
        const rows = await current.rows();
        res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" }).end(JSON.stringify(rows));
      } catch (error) {
        res.writeHead(503, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { type: "budget_unavailable", message: (error as Error).message } }));
      }
    },
  };
}
