# The commands people actually run. Each sets up what it needs through `install`.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Every package, pinned with its hashes: pyproject.toml says what we need, the lock what we run.
LOCK := requirements.lock
# Packages installed without their dependencies (their pins would fight ours), hash-checked.
NODEPS_LOCK := requirements-nodeps.lock
# `name==version` as the lock pins it: $(call pin,torch) is torch==2.13.0+cpu, the CPU build.
pin = $(shell grep -o '^$(1)==[^ ]*' $(LOCK))
# Where `make lock` finds the CPU torch wheel: not on PyPI, whose torch pulls CUDA;
# elsewhere https://download.pytorch.org/whl/cpu/torch/
TORCH_WHEELS ?= /opt/wheels

.PHONY: install lock demo test lint bench compile clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml or the lock changes, and stops first if they
# disagree. The lock's pip, then torch (the CPU build, no deps), so the lock finds both
# installed; then the lock, every file checked against its hash; then the no-deps lock (recbole,
# for the MovieLens-100K files it ships); then the project itself.
$(STAMP): pyproject.toml $(LOCK) $(NODEPS_LOCK)
	@python3 tools/check_lock.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet $(call pin,pip)
	$(PIP) install --quiet --no-deps $(call pin,torch)
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps --require-hashes -r $(NODEPS_LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

# After editing dependencies in pyproject.toml: re-resolve, keeping every other pin.
# uv pip compile rather than pip-compile: it resolves for a stated target (3.11, linux
# x86_64) instead of for the machine it runs on, reads no pip.conf (the lock comes from the
# sources named here only), and is one wheel pinned in the lock; pip-tools drives pip's
# internals and tends to break when pip is upgraded, which `make install` does.
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --quiet \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--find-links $(TORCH_WHEELS) --custom-compile-command 'make lock' -o $(LOCK)

# Not through install: that refuses a stale lock, which is when `make lock` is needed.
$(VENV)/bin/uv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet $(call pin,uv)

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
