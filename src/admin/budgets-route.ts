import type { BudgetLedger } from "../budgets/ledger.js";
import type { AdminRoute } from "./server.js";

/** GET /budgets: every live counter, `[{rule, client, window_start, tokens, requests, limit_tokens, limit_requests}]`. */
export function budgetsRoute(ledger: () => BudgetLedger | undefined): AdminRoute {
  return {
    path: "/budgets",
    methods: ["GET", "HEAD"],
    async handle(_req, res) {
      const current = ledger();
      try {
        const rows = current ? await current.rows() : [];
        res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" }).end(JSON.stringify(rows));
      } catch (error) {
        res.writeHead(503, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { type: "budget_unavailable", message: (error as Error).message } }));
      }
    },
  };
}
