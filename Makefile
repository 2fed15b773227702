# Two commands on a fresh machine: `make run` and `make test`.
NODE_MODULES_STAMP := node_modules/.package-lock.json
POLICY ?= policies/default.yaml

.PHONY: run test build install bench ca system-tools clean

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

# The end-to-end tests drive real clients: curl, openssl and python3's ssl.
system-tools:
	@missing=""; for tool in curl openssl python3; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && apt-get install -y -qq curl openssl python3 >/dev/null; \
	fi

test: build system-tools
	npm run typecheck
	npx vitest run

bench: build
	node --import tsx bench/run.ts

clean:
	rm -rf dist
