# `make run` and `make test` set everything up on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench clean agent-dist console browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## nats-server + orchestrator + one agent, in the foreground
	$(VENV)/bin/nexus up

test: $(VENV)/.installed browser  ## the whole suite: unit and integration (the console's in headless Chromium), two files at a time
	$(PY) -m pytest -n 2 --dist loadfile

CHROMIUM ?= /usr/bin/chromium
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
browser:  ## Debian's chromium for the console's browser tests (Playwright drives it; it never downloads one)
	@test -x $(CHROMIUM) || $(APT) install -y --no-install-recommends chromium \
		|| ($(APT) update && $(APT) install -y --no-install-recommends chromium)

console:  ## rebuild the web console (web/) into orchestrator/console/static; needs Node 20+ and npm
	cd web && npm ci --no-audit --no-fund && npm run build

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy schemas orchestrator/core bus agent

bench: $(VENV)/.installed  ## every bench/*.py, one table (bench/all.py); ansible-core is the peer's, not a Nexus dependency
	$(PY) -m pip install --quiet ansible-core
	$(PY) bench/all.py

agent-dist: $(VENV)/.installed  ## the node agent alone (schemas, bus, agent): build/agent-dist/nexus_agent-*.whl
	$(PY) packaging/agent/build.py

clean:
	rm -rf $(VENV) .nexus
