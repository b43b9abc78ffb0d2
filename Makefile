# Two commands a newcomer needs: `make run` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: installed first so the project's `torch>=2.4` is already satisfied
# and pip never pulls a multi-GB CUDA build. Override on a GPU machine: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	$(BIN)/batchprof run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest benches/ --benchmark-only -q

lint: setup
	$(BIN)/ruff check profiler kernels tests benches

clean:
	rm -rf $(VENV) build *.egg-info
