import { performance } from "node:perf_hooks";
import type { AuditRecord } from "../core/audit-record.js";
import type { TunnelContext } from "../core/exchange.js";

/** The audit line of a tunnel-level event (a CONNECT refused, a passthrough tunnel, a failed handshake). */
export function tunnelRecord(tunnel: TunnelContext, startedAt: number, fields: Partial<AuditRecord>): AuditRecord {
  return {
    msg: "tunnel",
    req_id: null,
    client: tunnel.client,
    client_addr: tunnel.clientAddr,
    method: "CONNECT",
    scheme: null,
    host: tunnel.host,
    port: tunnel.port,
    path: null,
    status: null,
    duration_ms: Math.round((performance.now() - startedAt) * 100) / 100,
    req_bytes: 0,
    resp_bytes: 0,
    decision: "allow",
    rule: null,
    reason: null,
    credentials: [],
    placeholders: [],
    ...fields,
  };
}
