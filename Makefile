# The two entry points are `make run` and `make test`; both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UI_STAMP := ui/node_modules/.package-lock.json
# pusher-js and laravel-echo for the tests that drive real Pusher clients (tests/node).
NODE_TESTS_STAMP := tests/node/node_modules/.package-lock.json
UI_SOURCES := $(shell find ui/src ui/index.html ui/vite.config.ts ui/tsconfig*.json -type f 2>/dev/null)

.PHONY: run test lint typecheck pytest ui-test ui chromium clean bench bench-quick bench-install

run: $(VENV)/.installed ui/dist/index.html
	$(BIN)/pgcast serve

test: $(VENV)/.installed $(UI_STAMP) lint typecheck ui-test pytest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "pgcast needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(UI_STAMP): ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(NODE_TESTS_STAMP): tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

ui/dist/index.html: $(UI_STAMP) $(UI_SOURCES)
	cd ui && npm run build --silent

ui: ui/dist/index.html

lint: $(VENV)/.installed
	$(BIN)/ruff check server tests $(wildcard bench)
	$(BIN)/ruff format --check server tests $(wildcard bench)

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict server

ui-test: $(UI_STAMP)
	cd ui && npm test --silent

# The browser tests drive Debian's chromium; Playwright never downloads a browser.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

chromium:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# pytest runs last so its summary line is the last thing `make test` prints.
# Exit code 5 ("no tests collected") is an error here like any other failure.
pytest: $(VENV)/.installed ui/dist/index.html chromium $(NODE_TESTS_STAMP)
	$(BIN)/python -m pytest -q

# Benchmarks: every script writes Markdown and JSON into one run directory; bench/report.py
# turns a run into bench/RESULTS.md and its plots (see bench/README.md).
RUN_DIR = bench/out/run-$(shell date -u +%Y%m%d-%H%M%S)

bench-install: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'

# Every scenario at smoke size, about a minute; its report stays in its run directory.
bench-quick: bench-install
	$(eval QUICK_DIR := $(RUN_DIR)-smoke)
	for script in db_limits socket_limit fanout ingest resume idle_sockets quick slow_consumer compare pusher; do \
		$(BIN)/python bench/$$script.py --smoke --out $(QUICK_DIR) > /dev/null || exit 1; done
	$(BIN)/python bench/report.py $(QUICK_DIR) --results $(QUICK_DIR)/RESULTS.md

bench: bench-install
	$(eval FULL_DIR := $(RUN_DIR))
	$(BIN)/python bench/db_limits.py --out $(FULL_DIR)
	$(BIN)/python bench/socket_limit.py --sockets 100,1000,5000 --out $(FULL_DIR)
	$(BIN)/python bench/fanout.py --out $(FULL_DIR)
	$(BIN)/python bench/ingest.py --out $(FULL_DIR)
	$(BIN)/python bench/resume.py --out $(FULL_DIR)
	$(BIN)/python bench/idle_sockets.py --out $(FULL_DIR)
	$(BIN)/python bench/compare.py --sockets 1000 --rate 200 --messages 1000 --burst 300 --out $(FULL_DIR)
	$(BIN)/python bench/quick.py --out $(FULL_DIR)
	$(BIN)/python bench/slow_consumer.py --out $(FULL_DIR)
	$(BIN)/python bench/pusher.py --out $(FULL_DIR)
	$(BIN)/python bench/report.py $(FULL_DIR)

clean:
	rm -rf $(VENV) ui/node_modules ui/dist .pgcast tests/node/node_modules
