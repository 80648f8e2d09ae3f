# The two commands of this repository (see README.md):
#   make book   builds the book into _build/html
#   make test   runs every test: the library's tests, nbval on every chapter, the book build
#               with warnings as errors, and the browser check of every page
# Both create the virtual environment .venv from requirements.txt on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NB     ?= chapters/*.ipynb

.PHONY: book book-fresh test pytest site-check execute benchmark clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

# The test builds every page afresh (--all): an incremental build re-reads only changed
# pages and so would not repeat the warnings of unchanged ones.
test: pytest site-check

book-fresh: $(STAMP)
	$(BIN)/jupyter-book build . --all --warningiserror --nitpick --keep-going

# Library tests and nbval (strict) on every chapter: options live in pyproject.toml.
pytest: $(STAMP)
	$(BIN)/pytest

site-check: book-fresh
	tools/browser_check.sh

# Re-execute chapters in place after editing them: make execute NB=chapters/01-....ipynb
execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NB)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_losses.py

clean:
	rm -rf _build .pytest_cache .hypothesis
