# Fresh machine: `make dev` runs Remedy, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev demo test bench clean

# The sample `demo` service's intake token for a local stack only (the intake listens on
# 127.0.0.1); real services name their own variables in remedy.toml.
export REMEDY_DEMO_TOKEN ?= remedy-demo-local-only

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first: the CPU build lies on these machines; a bare `torch` would pull CUDA.
$(STAMP): $(BIN)/python pyproject.toml clients/python/pyproject.toml
	@command -v bwrap >/dev/null || if [ "$$(id -u)" = 0 ]; then apt-get install -y bubblewrap || (apt-get update && apt-get install -y bubblewrap) || echo "Could not install bubblewrap: verification will be skipped (docs/sandbox.md)"; else echo "Install bubblewrap (apt-get install bubblewrap) or verification is skipped: docs/sandbox.md"; fi
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]' -e ./clients/python
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/remedy dev

demo: $(STAMP)
	$(BIN)/remedy demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd clients/python && ../../$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/intake_storm.py

clean:
	rm -rf $(VENV) .remedy
