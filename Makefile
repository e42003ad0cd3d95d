# The two entry points are `make run` and `make test`; both set everything up on a fresh machine.
PYTHON ?= python3
NODE ?= node
NPM ?= npm
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what serving needs; `make test` adds the test tools (about 5 times the size).
RUN_STAMP = $(VENV)/.installed-run
TEST_STAMP = $(VENV)/.installed-test
UI_STAMP := ui/node_modules/.package-lock.json
# pusher-js and laravel-echo for the tests that drive real Pusher clients (tests/node).
NODE_TESTS_STAMP := tests/node/node_modules/.package-lock.json
# examples/echo-react: Laravel Echo's React hooks against pgcast (tests/e2e/test_echo_example.py).
EXAMPLE_DIR := examples/echo-react
EXAMPLE_STAMP := $(EXAMPLE_DIR)/node_modules/.package-lock.json
# bench/peers/node: the Node peer of bench/compare.py, whose smoke run is one of the tests.
BENCH_NODE_STAMP := bench/peers/node/node_modules/.package-lock.json
UI_SOURCES := $(shell find ui/src ui/index.html ui/vite.config.ts ui/tsconfig*.json -type f 2>/dev/null)

.PHONY: run test lint typecheck pytest ui-test ui chromium deploy-tools clean bench bench-quick bench-install node-check example

run: $(RUN_STAMP) ui/dist/index.html
	$(BIN)/pgcast serve

test: $(TEST_STAMP) $(UI_STAMP) lint typecheck ui-test pytest

# $(1): what to install into the virtualenv.
define install_venv
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "pgcast needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '$(1)'
endef

$(RUN_STAMP): pyproject.toml
	$(call install_venv,.)
	touch $@

# The test install holds everything the run install does.
$(TEST_STAMP): pyproject.toml
	$(call install_venv,.[test])
	touch $@ $(RUN_STAMP)

# The UI is built with Vite 8, which runs on Node.js ^20.19 or >=22.12.
node-check:
	@command -v $(NPM) >/dev/null 2>&1 || { echo "pgcast needs Node.js 20.19+ or 22.12+ with npm; $(NPM) was not found" >&2; exit 1; }
	@version=$$($(NODE) --version 2>/dev/null) || { echo "pgcast needs Node.js 20.19+ or 22.12+ with npm; $(NODE) was not found" >&2; exit 1; }; \
	case "$$version" in \
	v20.19.*|v20.[2-9][0-9].*|v22.1[2-9].*|v22.[2-9][0-9].*|v2[3-9].*|v[3-9][0-9].*) ;; \
	*) echo "pgcast needs Node.js 20.19+ or 22.12+ with npm; found node $$version" >&2; exit 1 ;; \
	esac

$(UI_STAMP): ui/package-lock.json | node-check
	cd ui && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

$(NODE_TESTS_STAMP): tests/node/package-lock.json | node-check
	cd tests/node && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

$(EXAMPLE_STAMP): $(EXAMPLE_DIR)/package-lock.json | node-check
	cd $(EXAMPLE_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

# The example's dev server on http://127.0.0.1:5174, proxying to a pgcast already running
# (`make run` in another terminal; PGCAST_URL if it is not http://127.0.0.1:8080).
example: $(EXAMPLE_STAMP)
	cd $(EXAMPLE_DIR) && $(NPM) run dev

ui/dist/index.html: $(UI_STAMP) $(UI_SOURCES) | node-check
	cd ui && $(NPM) run build --silent

ui: ui/dist/index.html

lint: $(TEST_STAMP)
	$(BIN)/ruff check server tests $(wildcard bench)
	$(BIN)/ruff format --check server tests $(wildcard bench)

typecheck: $(TEST_STAMP)
	$(BIN)/mypy --strict server

ui-test: $(UI_STAMP)
	cd ui && $(NPM) test --silent

# The browser tests drive Debian's chromium; Playwright never downloads a browser.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

chromium:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Debian's pgbouncer (the tests run pgcast behind a real PgBouncer) and haproxy (they check
# and run the proxy configuration compose.yaml uses).
deploy-tools:
	test -x /usr/sbin/pgbouncer -a -x /usr/sbin/haproxy || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends pgbouncer haproxy; }

# pytest runs last so its summary line is the last thing `make test` prints.
# Exit code 5 ("no tests collected") is an error here like any other failure.
pytest: $(TEST_STAMP) ui/dist/index.html chromium deploy-tools $(NODE_TESTS_STAMP) $(EXAMPLE_STAMP) \
		$(BENCH_NODE_STAMP)
	$(BIN)/python -m pytest -q

# Benchmarks: every script writes Markdown and JSON into one run directory; bench/report.py
# turns a run into bench/RESULTS.md and its plots (see bench/README.md).
RUN_DIR = bench/out/run-$(shell date -u +%Y%m%d-%H%M%S)

# The Node peer of bench/compare.py (its smoke run is one of the tests).
$(BENCH_NODE_STAMP): bench/peers/node/package-lock.json | node-check
	cd bench/peers/node && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

bench-install: $(TEST_STAMP) $(BENCH_NODE_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'

# Every scenario at smoke size, a minute or two; its report stays in its run directory.
bench-quick: bench-install
	$(eval QUICK_DIR := $(RUN_DIR)-smoke)
	for script in db_limits socket_limit fanout ingest resume idle_sockets quick slow_consumer \
			compare channels versus_previous pusher private presence; do \
		$(BIN)/python -m bench.$$script --smoke --out $(QUICK_DIR) > /dev/null || exit 1; done
	$(BIN)/python -m bench.report $(QUICK_DIR) --results $(QUICK_DIR)/RESULTS.md

bench: bench-install
	$(eval FULL_DIR := $(RUN_DIR))
	$(BIN)/python -m bench.db_limits --out $(FULL_DIR)
	$(BIN)/python -m bench.socket_limit --sockets 100,1000,5000 --out $(FULL_DIR)
	$(BIN)/python -m bench.fanout --out $(FULL_DIR)
	$(BIN)/python -m bench.ingest --out $(FULL_DIR)
	$(BIN)/python -m bench.resume --out $(FULL_DIR)
	$(BIN)/python -m bench.idle_sockets --out $(FULL_DIR)
	$(BIN)/python -m bench.compare --sockets 1000 --burst 300 --out $(FULL_DIR)
	$(BIN)/python -m bench.quick --out $(FULL_DIR)
	$(BIN)/python -m bench.slow_consumer --out $(FULL_DIR)
	$(BIN)/python -m bench.channels --out $(FULL_DIR)
	$(BIN)/python -m bench.versus_previous --out $(FULL_DIR)
	$(BIN)/python -m bench.pusher --out $(FULL_DIR)
	$(BIN)/python -m bench.private --out $(FULL_DIR)
	$(BIN)/python -m bench.presence --out $(FULL_DIR)
	$(BIN)/python -m bench.report $(FULL_DIR)

clean:
	rm -rf $(VENV) ui/node_modules ui/dist .pgcast tests/node/node_modules \
		$(EXAMPLE_DIR)/node_modules $(EXAMPLE_DIR)/dist
