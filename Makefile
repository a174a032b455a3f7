# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME := $(abspath .dagster)
export SEKE_LAKE_URI ?= $(abspath lake)
export SEKE_LANDING_DIR ?= $(abspath landing)
export SEKE_DUCKDB_PATH ?= $(abspath lake/warehouse.duckdb)
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install weights services demo test test-slow test-all ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

weights: install
	$(BIN)/python -m seke fetch-weights

$(DAGSTER_HOME)/dagster.yaml: infra/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp infra/dagster.yaml $@

demo: weights $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m pipelines.demo

# System packages some suites need: Chromium (UI test in a real browser) and PostgreSQL
# (scale-out instance test). Installed from Debian when missing; the suites skip with a reason
# when they cannot be had.
services:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) || echo "chromium missing: the UI test will skip"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) || echo "postgresql missing: the PostgreSQL instance test will skip"

# Optional training extra (CPU torch wheel) so the training suites run too; they skip without it.
$(VENV)/.train-extra: $(VENV)/.installed
	$(BIN)/pip install -q 'torch==2.13.0' || echo "torch==2.13.0 unavailable: training tests will skip"
	touch $@

test: weights services $(DAGSTER_HOME)/dagster.yaml $(VENV)/.train-extra
	$(BIN)/python -m pytest -m "not slow"

test-slow: weights services $(DAGSTER_HOME)/dagster.yaml $(VENV)/.train-extra
	$(BIN)/python -m pytest -m slow

test-all: weights services $(DAGSTER_HOME)/dagster.yaml $(VENV)/.train-extra
	$(BIN)/python -m pytest

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf lake landing .dagster
