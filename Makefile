# The commands people actually run. Each sets up what it needs through `install`.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install demo test lint bench compile clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch first, pinned, so the
# CPU build is used; the project's range admits it and pip installs nothing more.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m replay.demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint -s manifests data .yamllint.yaml

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

compile: install
	$(VENV)/bin/driftloop pipeline compile

clean:
	rm -rf .driftloop build *.egg-info
