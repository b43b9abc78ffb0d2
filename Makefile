# Two commands a newcomer needs: `make run` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: installed first so the project's `torch>=2.4` is already satisfied
# and pip never pulls a multi-GB CUDA build. Override on a GPU machine: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test test-slow test-timing bench lint clean gpu-check browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	# The integrations' test extras, with torch named on the same line so pip keeps that build.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[dev,models,lightning,hf]"
	$(BIN)/python -m pip install --quiet --no-deps timm==1.0.31
	touch $@

run: setup
	$(BIN)/batchprof run

# The default suite: everything but the `slow` (tests measured at >= 8 s, the whole model zoo)
# and `timing` tests; minutes on 2 cores. CI (.ci/run) runs all three.
test: setup browser
	$(BIN)/python -m pytest -q -rs -m "not slow and not timing" --durations=15

test-slow: setup browser
	$(BIN)/python -m pytest -q -rs -m "slow and not timing" --durations=15

# Headless Chromium for the report.html browser test (Debian's `chromium`). Installed when
# missing and we are root; otherwise the test skips and prints why. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null) || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "chromium missing and not root: the browser test will skip"; fi

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
