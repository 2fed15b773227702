# mitmdump addon for bench/run.ts (mitmproxy as the HTTP/2 comparison peer).
#
# - *.bench.test resolves to 127.0.0.1 (the port from the CONNECT is kept): the equivalent of
#   portcullis' upstream.resolve. Any other server address is refused, so that nothing leaves
#   the loopback interface.
# - Prints "BENCH-READY" once the proxy listens, and one "BENCH-ERROR ..." line for each of the
#   first few failed flows (the rest are only counted, "BENCH-ERRORS N" at shutdown).
import sys

from mitmproxy import ctx  # noqa: F401  (loaded by mitmdump)

BENCH_DOMAIN = "bench.test"
MAX_PRINTED = 5


def is_bench_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == BENCH_DOMAIN or name.endswith("." + BENCH_DOMAIN)


class BenchAddon:
    def __init__(self) -> None:
        self.errors = 0

    def _say(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def running(self) -> None:
        self._say("BENCH-READY")

    def server_connect(self, data) -> None:
        host, port = data.server.address
        if host == "127.0.0.1":
            return
        if is_bench_host(str(host)):
            data.server.address = ("127.0.0.1", port)
        else:
            data.server.error = f"bench: {host} is not a bench host; refused"

    def error(self, flow) -> None:
        self.errors += 1
        if self.errors <= MAX_PRINTED:
            self._say(f"BENCH-ERROR {flow.request.pretty_url if flow.request else '?'}: {flow.error}")

    def done(self) -> None:
        self._say(f"BENCH-ERRORS {self.errors}")


addons = [BenchAddon()]
