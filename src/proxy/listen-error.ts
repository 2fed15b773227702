/** A listener that could not start, named with its address and the flag that moves it. */
export function listenError(which: "proxy" | "admin", host: string, port: number, error: NodeJS.ErrnoException): Error {
  const at = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const flag = which === "proxy" ? "--listen HOST:PORT (proxy.listen)" : "--admin HOST:PORT or --admin off (admin.listen)";
  const why =
    error.code === "EADDRINUSE"
      ? "the address is already in use (another portcullis?)"
      : error.code === "EACCES"
        ? "permission denied"
        : error.code === "EADDRNOTAVAIL"
          ? "no such local address"
          : error.message;
  return Object.assign(new Error(`${which} listener cannot listen on ${at}: ${why}; choose another with ${flag}`), { code: error.code });
}
