# bnnx: `make train` and `make test` work on a fresh clone (both run `make install` first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= cpu
ARGS   ?=
# one pytest process per core, at most 8 (each holds JAX and its compiled programs, ~1.5 GB)
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 8 ] && n=8; echo $$n)
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lce-env test-data c-compilers train lint test bench clean repro-bnew repro-rpr repro-ppt repro-ilb repro-signs repro-all

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install bnnx (editable) with its test extras

# LCE's interpreter extension is built against NumPy 1.x and misreads NumPy 2 arrays; bnnx needs NumPy 2,
# so the export tests run it in its own small environment (bnnx/export/lce_interpreter.py)
LCE_VENV := .venv-lce
# It needs only a Python to make a venv from, not bnnx installed: depending on $(STAMP) would let the
# tests' `make lce-env BIN=<their python>` reinstall bnnx (editable) from whichever checkout they run in
LCE_BASE = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
$(LCE_VENV)/.installed:
	test -d $(LCE_VENV) || $(LCE_BASE) -m venv $(LCE_VENV)
	$(LCE_VENV)/bin/pip install --quiet 'numpy<2' 'larq-compute-engine==0.16.0'
	touch $@

lce-env: $(LCE_VENV)/.installed ## Larq Compute Engine's interpreter (NumPy 1.x) in .venv-lce, for the lce export tests

train: install ## Quick default training (STE, MLP, embedded digits); ARGS="key=value ..." to override
	$(BIN)/bnnx train $(ARGS)

test-data: ## Install the Debian data set the tests read (dataset-fashion-mnist) when missing
	@sh .ci/test-data

c-compilers: ## Install gcc and gcc-arm-none-eabi (the C export's tests) when missing
	@sh .ci/c-compilers

lint: install ## ruff (pyflakes, isort, line length 120) over bnnx and tests, pyright (basic) over bnnx
	$(BIN)/ruff check bnnx tests
	$(BIN)/pyright

test: install lce-env test-data c-compilers lint ## Lint, then run the test suite (TEST_JOBS processes, one per core up to 8, one file each)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(LCE_VENV) .pytest_cache

bench: install ## Speed/memory benchmark; results with their targets in bench.json
	$(BIN)/bnnx bench --out bench.json

# Each paper table: run the sweep (PRESET=smoke|cpu|paper), then always write its report.
define repro
	$(BIN)/bnnx sweep sweeps/$(1).yaml --preset $(PRESET) $(ARGS); status=$$?; \
	$(BIN)/bnnx report sweep_runs/$(1)-$(PRESET) && exit $$status
endef

repro-bnew: install ## BNEW paper's CIFAR table (PRESET=smoke|cpu|paper)
	$(call repro,bnew_cifar)
repro-rpr: install ## RPR paper's Table 1, RPR rows
	$(call repro,rpr_imagenet)
repro-ppt: install ## Partial pre-training speedups
	$(call repro,ppt_speedup)
repro-ilb: install ## Iterative layer binarization orders
	$(call repro,ilb_order)
repro-signs: install ## Stable-signs study (scaling factors, sign stability)
	$(call repro,stable_signs)
repro-all: repro-bnew repro-rpr repro-ppt repro-ilb repro-signs ## Every paper table
