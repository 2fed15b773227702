import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AuditRecord } from "../src/core/audit-record.js";
import { Exchange } from "../src/core/exchange.js";
import { auditLine } from "../src/log/loggers.js";
import { tunnelRecord } from "../src/transport/audit.js";

/** The line as pino would write it: level, time, every field in the record's order, msg last. */
function pinoShape(record: AuditRecord, level: number, time: number): string {
  const { msg, ...fields } = record;
  return `${JSON.stringify({ level, time, ...fields, msg })}\n`;
}

const text = fc.string({ maxLength: 40 });
const nullable = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: null });

describe("audit line", () => {
  it("is pino's line for an exchange's record, whatever its fields hold", () => {
    fc.assert(
      fc.property(
        fc.record({
          host: text,
          path: text,
          method: fc.constantFrom("GET", "POST", "CONNECT"),
          status: nullable(fc.integer({ min: 100, max: 599 })),
          header: fc.tuple(text, text),
          reqBody: fc.option(text, { nil: undefined }),
          error: fc.option(fc.record({ type: text, message: text }), { nil: undefined }),
          msg: fc.constantFrom("http", "websocket", "denied") as fc.Arbitrary<"http" | "websocket" | "denied">,
        }),
        fc.integer({ min: 30, max: 50 }),
        fc.nat(),
        (fields, level, time) => {
          const exchange = new Exchange("id-1", { host: fields.host, port: 443, client: null, clientAddr: "127.0.0.1" }, { scheme: "https", host: fields.host, port: 443 }, fields.method, fields.path, ["Host", fields.host, ...fields.header], "1.1");
          exchange.status = fields.status;
          exchange.reqBody = fields.reqBody;
          exchange.error = fields.error;
          const record = exchange.toRecord(fields.msg);
          const line = auditLine(record, level, time);
          expect(line).toBe(pinoShape(record, level, time));
          expect(Object.keys(JSON.parse(line) as object).at(-1)).toBe("msg");
        },
      ),
    );
  });

  it("is pino's line for tunnel records, a record that is msg alone, and one whose msg is not first", () => {
    const tunnel = tunnelRecord({ host: "example.test", port: 443, client: "ci", clientAddr: "10.0.0.1" }, 0, { msg: "http", status: 400, error: { type: "bad_request", message: 'a "quoted" \\ reason' } });
    const msgAlone = { msg: "tunnel" } as AuditRecord;
    const { msg, ...rest } = tunnel;
    const msgLast = { ...rest, msg } as AuditRecord;
    for (const record of [tunnel, msgAlone, msgLast]) expect(auditLine(record, 40, 1_700_000_000_000)).toBe(pinoShape(record, 40, 1_700_000_000_000));
  });
});
