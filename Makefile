# bnnx: `make train` and `make test` work on a fresh clone (both run `make install` first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= cpu
ARGS   ?=
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install train test bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install bnnx (editable) with its test extras

train: install ## Quick default training (STE, MLP, embedded digits); ARGS="key=value ..." to override
	$(BIN)/bnnx train $(ARGS)

test: install ## Run the test suite
	$(BIN)/python -m pytest -q $(ARGS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache
