# Two commands a newcomer needs: `make run` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: installed first so the project's `torch>=2.4` is already satisfied
# and pip never pulls a multi-GB CUDA build. Override on a GPU machine: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test test-timing bench lint clean gpu-check

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

# Tests that depend on wall-clock timing (two real profiles whose knees must agree, GPU speed
# ratios, a sampler that needs readings within 0.3 s): flaky on a loaded machine, so apart.
test-timing: setup
	$(BIN)/python -m pytest -q -m timing

bench: setup
	$(BIN)/python -m pytest benches/ --benchmark-only -q

lint: setup
	$(BIN)/ruff check profiler kernels tests benches

# The GPU check (issue 17; README "GPU check"). On a GPU machine: `make gpu-check` with the
# image's python3 writes into $$OUT (or OUT=dir); `make gpu-check DRY=1` is the CPU dry run in
# the venv. Without make: `bash scripts/gpu_check.sh DIR [--dry-run]`.
OUT ?= reports/gpu-check
gpu-check: $(if $(DRY),setup)
	PYTHON=$(if $(DRY),$(BIN)/python,$(PYTHON)) bash scripts/gpu_check.sh "$(OUT)" $(if $(DRY),--dry-run)

clean:
	rm -rf $(VENV) build *.egg-info
