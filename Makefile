# ferrolab: two commands for everything.
#   make up    install what is missing, then start JupyterLab with notebooks/ open
#   make test  cargo test, the real-client suites in tests/, and the notebooks
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# rust-analyzer's crates read `CI` at compile time (option_env!), so a changed `CI`
# rebuilds them; keep it out of every command so CI and local runs share the cache.
unexport CI

# Builds go to a cache outside the clone, so a fresh clone reuses earlier builds.
FERROLAB_CACHE ?= $(HOME)/.cache/ferrolab
export CARGO_TARGET_DIR ?= $(FERROLAB_CACHE)/target
export PIP_CACHE_DIR ?= $(FERROLAB_CACHE)/pip

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CARGO_TARGET_DIR)/debug/ferrolab
LAB_PORT ?= 8888
# JupyterLab refuses to run as root unless told; a fresh machine is often root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: up test build venv lab-deps kernelspec test-rust test-python lint bench

build:
	cargo build --locked --bin ferrolab

$(VENV)/.test-deps: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r tests/requirements.txt
	touch $@

$(VENV)/.lab-deps: scripts/requirements-lab.txt $(VENV)/.test-deps
	$(PY) -m pip install --quiet -r scripts/requirements-lab.txt
	touch $@

venv: $(VENV)/.test-deps

lab-deps: $(VENV)/.lab-deps

kernelspec: build lab-deps
	VIRTUAL_ENV="$(abspath $(VENV))" $(BIN) kernel install --sys-prefix

up: kernelspec
	@echo
	@echo "ferrolab is ready."
	@echo "  Kernel:        Rust (ferrolab), installed in $(VENV)"
	@echo "  Collab server: not built yet (see docs/collab.md)"
	@echo "  JupyterLab:    starting on http://127.0.0.1:$(LAB_PORT)/lab (URL with token below)"
	@echo
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) $(LAB_ROOT_FLAG) \
		--ServerApp.root_dir="$(abspath notebooks)"

test-rust:
	cargo test --locked --workspace

test-python: build venv
	FERROLAB_BIN="$(BIN)" $(PY) -m pytest tests/python -q -p no:cacheprovider

test: test-rust test-python

lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

bench: build venv
	FERROLAB_BIN="$(BIN)" $(PY) bench/kernel_bench.py
