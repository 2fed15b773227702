/**
 * An "error" listener that destroys the socket (or h2 session) it is on, for sockets whose failures are reported
 * elsewhere (by the request on them, or their close) and would otherwise be fatal. One function
 * shared by every socket: a closure per socket lives as long as the socket does, and keeps
 * whatever its scope held alive with it.
 */
export function destroyOnError(this: { destroy(): unknown }): void {
  this.destroy();
}
