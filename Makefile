# winnow — the two commands:  `make demo` (set up + run the main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.winnow-installed
EXTRAS ?= text,dask,dev
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-all bench bench-quick bench-gpu clean

# torch first, from the pinned CPU wheel: installing the project first would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/winnow demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

# Benchmarks (never part of the tests): faiss-cpu and psutil come from the `bench` extra.
# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS="--quick --only ssp"`.
BENCH_STAMP := $(VENV)/.winnow-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# GPU variant: needs a CUDA build of torch on a machine with a GPU; fails (exit 2) without one.
bench-gpu: $(BENCH_STAMP)
	$(BIN)/python -m bench --device cuda $(BENCH_ARGS)

clean:
	rm -rf .winnow $(VENV) .pytest_cache
