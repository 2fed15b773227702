# Two commands on a fresh machine: `make run` and `make test`.
NODE_MODULES_STAMP := node_modules/.package-lock.json
POLICY ?= policies/default.yaml

.PHONY: run test build install bench ca system-tools bench-tools clean

# `npm ci` installs exactly the lock file (npm install when there is none). Everything that
# only prepares `make run` writes to stderr: stdout is the audit stream (`make run | portcullis tail`).
$(NODE_MODULES_STAMP): package.json $(wildcard package-lock.json)
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
	@touch $(NODE_MODULES_STAMP)

install: $(NODE_MODULES_STAMP)

# dist is rebuilt only when a source, the compiler settings or the dependencies changed.
BUILD_INPUTS := $(shell find src -name '*.ts') tsconfig.json package.json $(wildcard package-lock.json)

dist/cli.js: $(BUILD_INPUTS) $(NODE_MODULES_STAMP)
	@npm run build >&2
	@touch dist/cli.js

build: dist/cli.js

ca: build
	@test -f certs/ca.pem || node dist/cli.js init-ca --dir certs >&2

run: ca
	@node dist/cli.js start --policy $(POLICY)

# The end-to-end tests drive real clients: curl, openssl, python3's ssl and a Go net/http
# program (test/go/h2client, built by its test; `go` comes from Debian's golang-go); the /ui
# test drives Debian's chromium headless through puppeteer-core (no browser download).
# test/parent-proxy.test.ts starts squid as a parent proxy: squid-openssl, the package the benches use
# too (it conflicts with plain squid; both install /usr/sbin/squid and basic_ncsa_auth).
# Each entry is command:package; only the packages of missing commands are installed.
SYSTEM_TOOLS := curl:curl openssl:openssl python3:python3 go:golang-go chromium:chromium /usr/sbin/squid:squid-openssl redis-server:redis-server keytool:default-jre-headless git:git /usr/lib/python3/dist-packages/requests:python3-requests /usr/lib/python3/dist-packages/pip:python3-pip

# $(call install-missing,command:package ...): apt-get installs the packages of missing commands only.
define install-missing
@missing=""; for entry in $(1); do command -v $${entry%%:*} >/dev/null || missing="$$missing $${entry#*:}"; done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
fi
endef

# The AWS SigV4 tests sign and check signatures with Debian's botocore, imported by Debian's own
# python3 (a pyenv python3 earlier on PATH has no botocore): checked by import, not by command.
PYTHON_MODULES := botocore:python3-botocore

system-tools:
	$(call install-missing,$(SYSTEM_TOOLS))
	@missing=""; for entry in $(PYTHON_MODULES); do /usr/bin/python3 -c "import $${entry%%:*}" 2>/dev/null || missing="$$missing $${entry#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; fi

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
