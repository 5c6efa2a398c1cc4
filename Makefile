# Quick start: `make demo` runs the main job on the built-in synthetic corpus,
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=

.PHONY: setup demo test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a different (CUDA) build.
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" -e ".[test]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/radpair demo --out demo_out $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) demo_out
