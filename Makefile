# The commands of this repository (see README.md):
#   make book     builds both editions: English into _build/html, Chinese
#                 (中文版) into _build/html/zh (tools/build_book.py)
#   make translations  after an English edit: updates the Chinese catalogues
#                 (locales/zh_CN) and lists what is left to translate
#   make pdf      builds the PDF edition, _build/pdf/cross-entropy-executable.pdf
#   make test     runs every test (below); .ci/run calls it and nothing else
#   make execute  re-executes chapters in place (NB=chapters/NN-....ipynb)
#   make lint     ruff check and ruff format --check
#   make benchmark
# Each creates the virtual environment .venv from requirements.txt on first use.
#
# make test runs four lanes side by side (make -j4) and prints each step's
# time:
#   tests       the library's tests and doctests, the tooling's tests
#   chapters    every chapter under nbval (text outputs, and figures through
#               tools/nbval_figures.py)
#   lint, actionlint, then the English site: a fresh build with warnings as
#               errors and the browser check of its pages
#               (tools/check_site.py), which also prints the PDF edition and
#               checks it
#   the Chinese site: a fresh build with warnings as errors (it fails on any
#               message left untranslated) and the browser check of its pages

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NB     ?= chapters/*.ipynb
PDF    := _build/pdf/cross-entropy-executable.pdf
TIMES  := _build/test-times.txt
LINT_PATHS := ce_lib tests tools benchmarks chapters conftest.py _ext

# $(call timed,NAME,COMMAND): run COMMAND, append its wall time to $(TIMES)
define timed
@mkdir -p _build; start=$$EPOCHREALTIME; rc=0; $(2) || rc=$$?; \
	awk -v n="$(1)" -v a="$$start" -v b="$$EPOCHREALTIME" -v rc=$$rc \
	  'BEGIN { printf "%-12s %6.1f s%s\n", n, b - a, rc ? "  FAILED" : "" }' \
	  >> $(TIMES); exit $$rc
endef

.PHONY: book translations pdf test test-lanes pytest pytest-lib pytest-chapters lint actionlint site-check \
        site-check-zh build-en build-zh browser \
        execute benchmark clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

book: $(STAMP)
	$(BIN)/python tools/build_book.py

# After editing the English: extract the messages (_build/gettext), merge them
# into the catalogues (a changed message becomes fuzzy, its old translation
# kept as a draft; a new one empty; a removed one is dropped), then list what
# is left to translate.
translations: $(STAMP)
	$(BIN)/python tools/build_book.py --gettext
	$(BIN)/sphinx-intl update --pot-dir _build/gettext --language zh_CN \
	  --locale-dir locales --line-width 79 --no-obsolete > /dev/null
	-$(BIN)/python tools/check_translations.py

pdf: book
	tools/install_browser.sh
	$(BIN)/python tools/make_pdf.py --out $(PDF)
	$(BIN)/python tools/make_pdf.py --check $(PDF)

test: $(STAMP)
	@rm -f $(TIMES); start=$$EPOCHREALTIME; rc=0; \
	$(MAKE) --no-print-directory --keep-going -j4 --output-sync=target \
	  test-lanes || rc=$$?; \
	echo "== make test: time of each step (four lanes side by side)"; \
	cat $(TIMES); \
	awk -v a="$$start" -v b="$$EPOCHREALTIME" \
	  'BEGIN { printf "%-12s %6.1f s\n", "total", b - a }'; \
	if grep -q FAILED $(TIMES); then rc=1; fi; \
	exit $$rc

test-lanes: pytest-lib pytest-chapters lint actionlint site-check site-check-zh

# Library tests and doctests, nbval (strict) on every chapter, figure
# regression, the tooling's tests: options live in pyproject.toml.
# Two pytest processes, one for the tests and one for the chapters, rather
# than pytest-xdist's workers, each of which collects and imports everything
# (a third more CPU time on two cores). One torch thread per process
# (OMP_NUM_THREADS=1, read at import): the lanes already share the two
# cores, and idle intra-op threads spin (a fifth of the notebooks' CPU time);
# nbval holds the printed numbers to those stored by `make execute`, which
# runs on every core.
pytest: pytest-lib pytest-chapters

pytest-lib: $(STAMP)
	$(call timed,tests,OMP_NUM_THREADS=1 $(BIN)/pytest -p no:xdist tests ce_lib)

pytest-chapters: $(STAMP)
	$(call timed,chapters,OMP_NUM_THREADS=1 $(BIN)/pytest -p no:xdist chapters)

lint: $(STAMP)
	$(call timed,ruff,$(BIN)/ruff check $(LINT_PATHS) && $(BIN)/ruff format --check $(LINT_PATHS))

actionlint:
	$(call timed,actionlint,tools/actionlint.sh)

# The site, one lane per edition: a fresh build with warnings as errors, then
# the browser check of its pages (the Chinese one fails on any message left
# untranslated). The English check also prints the PDF edition and checks it;
# the Chinese check compares each page's formulas with the English page's, so
# it also waits for the English build. A check runs even when its build had
# warnings (the build has written every page all the same), so one run reports
# both; a failed step is marked FAILED in $(TIMES), which fails `make test`.
# Chromium is installed (where it must be) once, before either check. The
# English lane is the longest, so the Chinese build waits for the English one
# (fewer processes share the two cores while it runs), and its check uses one
# browser beside the English check's two. The Chinese check, which runs once
# both editions are built, checks that every language link of both leads to a
# built page.
site-check: build-en browser
	-$(call timed,site+pdf,tools/browser_check.sh --editions en --pdf $(PDF))

site-check-zh: build-zh build-en browser
	-$(call timed,site-zh,tools/browser_check.sh --editions zh --jobs 1 --language-links)

# The test builds every page afresh (--all): an incremental build re-reads only
# changed pages and so would not repeat the warnings of unchanged ones.
build-en: $(STAMP)
	-$(call timed,build-en,$(BIN)/python tools/build_book.py --all --edition en)

build-zh: $(STAMP) | build-en
	-$(call timed,build-zh,$(BIN)/python tools/build_book.py --all --edition zh)

browser:
	-@tools/install_browser.sh > /dev/null 2>&1

# Re-execute chapters in place after editing them: make execute NB=chapters/01-....ipynb
execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NB)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_linear_ce.py

clean:
	rm -rf _build .pytest_cache .hypothesis tools/node_modules
