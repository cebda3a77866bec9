# Every job has one command; .ci/run calls the same ones.
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# npm writes this file on each install; the Node clients of tests/clients are installed once
# per change of their lock file.
NODE_CLIENTS := tests/clients/node
NODE_INSTALLED := $(NODE_CLIENTS)/node_modules/.package-lock.json
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-production-stack services-stop bench bench-usage lint format check compat-table

$(INSTALLED): requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $(INSTALLED)

# The Node clients of the compatibility suite (tests/clients), exactly as locked: nothing is
# fetched while the tests run. Node and npm come from Debian's packages when missing.
$(NODE_INSTALLED): $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	scripts/system-deps node
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_INSTALLED)

install: $(INSTALLED) $(NODE_INSTALLED)

run: install
	$(PYTHON) manage.py migrate --no-input
	$(PYTHON) manage.py bootstrap
	$(PYTHON) -m gateway.server -b $(HOST) -p $(PORT) gateway.asgi:application

# The whole suite on SQLite and the in-process cache. The browser test needs Chromium and
# the multi-process test PostgreSQL and Redis: Debian's packages are installed when missing.
test: install
	scripts/system-deps browser services
	$(PYTHON) -m pytest

# The whole suite again on PostgreSQL and Redis, started on loopback by scripts/services.
test-production-stack: install
	scripts/system-deps browser services
	env $$(scripts/services start) $(PYTHON) -m pytest

services-stop:
	scripts/services stop

# What the gateway adds to each request, beside a bare proxy and the upstream (bench/).
bench: install
	$(PYTHON) -m bench.run

# The usage pages, limits and pruning over ROWS usage records on PostgreSQL (bench/usage.py).
ROWS ?= 1000000
bench-usage: install
	scripts/system-deps services
	$(PYTHON) -m bench.usage --rows $(ROWS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: lint test

# Rewrite the README's client compatibility tables from the last run of tests/clients.
compat-table:
	scripts/compat-table
