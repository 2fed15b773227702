# Two commands on a fresh machine: `make run` and `make test`.
NODE_MODULES_STAMP := node_modules/.package-lock.json
POLICY ?= policies/default.yaml

.PHONY: run test build install bench ca system-tools bench-tools clean

# `npm ci` rejects lock files from this registry (they leave out other platforms' optional
# packages), so the install goes through `npm install`, which still follows the lock.
$(NODE_MODULES_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund
	@touch $(NODE_MODULES_STAMP)

install: $(NODE_MODULES_STAMP)

build: install
	npm run build

ca: build
	@test -f certs/ca.pem || node dist/cli.js init-ca --dir certs

run: ca
	node dist/cli.js start --policy $(POLICY)

# The end-to-end tests drive real clients: curl, openssl, python3's ssl and a Go net/http
# program (test/go/h2client, built by its test; `go` comes from Debian's golang-go).
# Each entry is command:package; only the packages of missing commands are installed.
SYSTEM_TOOLS := curl:curl openssl:openssl python3:python3 go:golang-go redis-server:redis-server

# $(call install-missing,command:package ...): apt-get installs the packages of missing commands only.
define install-missing
@missing=""; for entry in $(1); do command -v $${entry%%:*} >/dev/null || missing="$$missing $${entry#*:}"; done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
fi
endef

system-tools:
	$(call install-missing,$(SYSTEM_TOOLS))

# The benchmark's peers (bench/README.md): the Go ReverseProxy MITM is built with Debian's Go,
# mitmproxy is the h2 peer, squid-openssl the ssl-bump peer (squid and its certificate helper
# live outside a normal user's PATH, hence the full paths). `make run` needs none of them.
BENCH_TOOLS := go:golang-go mitmdump:mitmproxy /usr/sbin/squid:squid-openssl /usr/lib/squid/security_file_certgen:squid-openssl

bench-tools:
	$(call install-missing,$(BENCH_TOOLS))

test: build system-tools
	npm run typecheck
	npx vitest run

bench: build bench-tools
	node --import tsx bench/run.ts

clean:
	rm -rf dist
