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
export npm_config_cache ?= $(FERROLAB_CACHE)/npm

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CARGO_TARGET_DIR)/debug/ferrolab
SPLICE_PEER := $(CARGO_TARGET_DIR)/debug/examples/splice_peer
LAB_PORT ?= 8888
COLLAB_PORT ?= 7878
COLLAB_DATA ?= .ferrolab/data
# JupyterLab refuses to run as root unless told; a fresh machine is often root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: up test build venv lab-deps node-deps kernelspec collab-up test-rust test-python test-collab lint bench bench-kernel bench-collab bench-data

build:
	cargo build --locked --bin ferrolab --example splice_peer

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

# `npm install` (not `npm ci`): optional platform packages of cbor-extract are not
# published for every platform, and `npm ci` refuses a lock file without them.
tests/collab/node_modules/.installed: tests/collab/package-lock.json
	cd tests/collab && npm install --no-audit --no-fund --loglevel=error
	touch $@

node-deps: tests/collab/node_modules/.installed

kernelspec: build lab-deps
	VIRTUAL_ENV="$(abspath $(VENV))" $(BIN) kernel install --sys-prefix

# Starts the collaboration server in the background (once) on its embedded
# storage, and keeps an owner token for this checkout in .ferrolab/owner-token.
collab-up: build
	@mkdir -p .ferrolab
	@if [ ! -s .ferrolab/owner-token ]; then \
		umask 077; $(BIN) collab token create --data $(COLLAB_DATA) --name local-owner --role owner > .ferrolab/owner-token; \
	fi
	@if [ -f .ferrolab/collab.pid ] && kill -0 "$$(cat .ferrolab/collab.pid)" 2>/dev/null; then \
		echo "collab server already running (pid $$(cat .ferrolab/collab.pid))"; \
	else \
		nohup $(BIN) collab serve --data $(COLLAB_DATA) --bind 127.0.0.1:$(COLLAB_PORT) \
			>> .ferrolab/collab.log 2>&1 & echo $$! > .ferrolab/collab.pid; \
		for i in $$(seq 1 100); do \
			if curl -fs -o /dev/null -H "Authorization: Bearer $$(cat .ferrolab/owner-token)" \
				http://127.0.0.1:$(COLLAB_PORT)/api/notebooks; then break; fi; \
			if ! kill -0 "$$(cat .ferrolab/collab.pid)" 2>/dev/null; then \
				echo "the collab server did not start; see .ferrolab/collab.log"; tail -5 .ferrolab/collab.log; exit 1; fi; \
			sleep 0.1; \
		done; \
	fi

up: kernelspec collab-up
	@echo
	@echo "ferrolab is ready."
	@echo "  Kernel:        Rust (ferrolab), installed in $(VENV)"
	@echo "  Collab server: http://127.0.0.1:$(COLLAB_PORT)/api/notebooks  (sync: ws://127.0.0.1:$(COLLAB_PORT)/sync)"
	@echo "                 owner token in .ferrolab/owner-token; data in $(COLLAB_DATA); log in .ferrolab/collab.log"
	@echo "  JupyterLab:    starting on http://127.0.0.1:$(LAB_PORT)/lab (URL with token below)"
	@echo
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) $(LAB_ROOT_FLAG) \
		--ServerApp.root_dir="$(abspath notebooks)"

test-rust:
	cargo test --locked --workspace

test-python: build venv
	FERROLAB_BIN="$(BIN)" $(PY) -m pytest tests/python -q -p no:cacheprovider

test-collab: build node-deps
	cd tests/collab && FERROLAB_BIN="$(BIN)" FERROLAB_SPLICE_PEER="$(SPLICE_PEER)" \
		node --test --test-concurrency=1

test: test-rust test-python test-collab

lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

bench: bench-kernel bench-collab bench-data

bench-kernel: build venv
	FERROLAB_BIN="$(BIN)" $(PY) bench/kernel_bench.py

bench/collab/node_modules/.installed: bench/collab/package-lock.json
	cd bench/collab && npm install --no-audit --no-fund --loglevel=error
	touch $@

# The collab server against automerge-repo's Node sync server, same load, same run.
bench-collab: build bench/collab/node_modules/.installed
	mkdir -p bench/results
	cd bench/collab && node load.mjs --bin "$(BIN)" --out ../results/collab-load.json

# The data magics on a generated 10M-row log against DuckDB, Python polars and pandas.
bench-data: build venv
	FERROLAB_BIN="$(BIN)" $(PY) bench/data_bench.py
