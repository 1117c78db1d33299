# `make run` and `make test` set everything up on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench clean agent-dist

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## nats-server + orchestrator + one agent, in the foreground
	$(VENV)/bin/nexus up

test: $(VENV)/.installed  ## the whole suite: unit and integration
	$(PY) -m pytest

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
