# Two entry points for a fresh machine (see README.md):
#   make quickstart   install everything, then compare baseline vs full SMAT x 3 seeds on Shakespeare
#   make test         install everything, fetch the bundled corpora, then run the whole test suite
# For contributors: make lint (ruff check + format check), make format, make test-fast (the quick
# core: no slow, multi-process or downloaded-corpus tests). Both run the tests on every core (pytest-xdist's
# -n logical: one worker per logical CPU, the CPU threads shared out in tests/conftest.py); plain `pytest` runs one process.
# TORCH_SPEC pins the torch build installed before slmlab itself (here: the local CPU wheel);
# override it for another build, e.g. make test TORCH_SPEC="torch==2.13.0 --index-url ...".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quickstart test test-fast lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

quickstart: install
	$(BIN)/slmlab sweep configs/smat_quick.toml --jobs 2
	$(BIN)/slmlab generate runs/smat_quick/full_s0 --prompt "ROMEO:" --max-new-tokens 200 --seed 0

test: install
	$(BIN)/slmlab data download
	$(BIN)/python -m pytest -n logical

test-fast: install
	$(BIN)/python -m pytest -n logical -m "not slow and not distributed and not network"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m benchmarks all

clean:
	rm -rf $(VENV) runs .pytest_cache
