import type { Duplex } from "node:stream";
import * as wsLibrary from "ws";

/**
 * The `ws` library's own frame parser, framer and permessage-deflate (exported by its ESM
 * entry, untyped by @types/ws): the inspected relay uses them rather than a framer of its own.
 */
export interface WsReceiver {
  write(chunk: Buffer): boolean;
  on(event: "message", listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: "ping" | "pong", listener: (data: Buffer) => void): this;
  on(event: "conclude", listener: (code: number, reason: Buffer) => void): this;
  on(event: "error", listener: (error: Error & { code?: string }) => void): this;
  on(event: "drain", listener: () => void): this;
}

export interface WsSender {
  send(data: Buffer, options: { binary: boolean; compress: boolean; fin: boolean; mask: boolean }, cb?: (error?: Error) => void): void;
  ping(data: Buffer, mask: boolean, cb?: (error?: Error) => void): void;
  pong(data: Buffer, mask: boolean, cb?: (error?: Error) => void): void;
  close(code: number | undefined, data: Buffer | undefined, mask: boolean, cb?: (error?: Error) => void): void;
}

export interface WsDeflate {
  accept(configurations: Record<string, string[] | true[]>[]): unknown;
  cleanup(): void;
}

interface WsInternals {
  Receiver: new (options: { binaryType: "nodebuffer"; extensions: Record<string, WsDeflate>; isServer: boolean; maxPayload: number; allowSynchronousEvents?: boolean }) => WsReceiver;
  Sender: new (socket: Duplex, extensions: Record<string, WsDeflate>, generateMask?: (mask: Buffer) => void) => WsSender;
  PerMessageDeflate: new (options: { isServer: boolean; maxPayload: number; threshold?: number }) => WsDeflate;
  extension: { parse(header: string): Record<string, Record<string, (string | true)[]>[]> };
}

const internals = wsLibrary as unknown as WsInternals;

export const EXTENSION = "permessage-deflate";

/**
 * The extensions of one side of a session, as the upstream's 101 negotiated them: the same
 * parameters for both ends, each applying its own half (server_* or client_*).
 */
export function negotiatedExtensions(header: string | null, isServer: boolean, maxPayload: number): Record<string, WsDeflate> {
  if (!header) return {};
  const offers = internals.extension.parse(header)[EXTENSION];
  if (!offers?.length) return {};
  const deflate = new internals.PerMessageDeflate({ isServer, maxPayload });
  deflate.accept(offers as Record<string, string[]>[]);
  return { [EXTENSION]: deflate };
}

export function createReceiver(extensions: Record<string, WsDeflate>, isServer: boolean, maxPayload: number): WsReceiver {
  return new internals.Receiver({ binaryType: "nodebuffer", extensions, isServer, maxPayload });
}

export function createSender(socket: Duplex, extensions: Record<string, WsDeflate>): WsSender {
  return new internals.Sender(socket, extensions);
}

/** The close code ws attached to a protocol error (1002, 1007, 1009 ...). */
export function closeCodeOf(error: Error): number {
  for (const symbol of Object.getOwnPropertySymbols(error)) {
    const value = (error as unknown as Record<symbol, unknown>)[symbol];
    if (typeof value === "number" && value >= 1000 && value < 5000) return value;
  }
  return 1002;
}
