import type { BudgetLedger } from "../budgets/ledger.js";
import type { AdminRoute } from "./server.js";

/** GET /budgets: every live counter, `[{rule, client, window_start, tokens, requests, limit_tokens, limit_requests}]`; 404 when the policy has no budgets. */
export function budgetsRoute(ledger: () => BudgetLedger | undefined): AdminRoute {
  return {
    path: "/budgets",
    methods: ["GET", "HEAD"],
    async handle(_req, res) {
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
