# winnow — the two commands:  `make demo` (set up + run the main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.winnow-installed
EXTRAS ?= text,dask,dev
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-all bench bench-gpu clean

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

bench: setup
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m bench

clean:
	rm -rf .winnow $(VENV) .pytest_cache
