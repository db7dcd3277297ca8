# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test fuzz bench bench-filter bench-office bench-av screenshots soak lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m lab demo

test: setup
	$(VENV)/bin/pytest -q tests

# The long fuzz runs (make test runs the short ones): every target FUZZ_SECONDS seconds in turn
# (atheris, corpus kept in $$VCR_FUZZ_DIR, default /tmp/vcr-fuzz), then the center's API as long.
# One target: python -m tests.fuzz TARGET --seconds N (docs/fuzzing.md).
FUZZ_SECONDS ?= 300
fuzz: setup
	$(PY) -m tests.fuzz all --seconds $(FUZZ_SECONDS); rc=$$?; \
	$(PY) -m tests.fuzz api --seconds $(FUZZ_SECONDS) && exit $$rc

bench: setup
	$(PY) -m lab bench; rc=$$?; \
	$(PY) -m lab bench --suite office && exit $$rc

# the office alone (about 10 minutes): 50 users' pages, mail, downloads, video; 1 and 2 workers
bench-office: setup
	$(PY) -m lab bench --suite office

bench-filter: setup
	$(PY) -m lab bench --suite filter

bench-av: setup
	$(PY) -m lab av-bench

# every page of the control panel and the console, ja/en, desktop/phone, into docs/screenshots/
# every screenshot in docs/screenshots/: panel and console pages, then the report's pages and the block pages
screenshots: setup
	$(PY) -m lab screenshots
	$(PY) -m lab screenshots-report

# 30 minutes of office traffic through every engine while the agent is reloaded, updated, cut off from
# its center and has workers killed (not in CI: tests/e2e/test_soak.py runs a 2-minute version).
soak: setup
	$(PY) -m lab soak

clean:
	-$(PY) -m lab down
	rm -rf $(VENV) *.egg-info .pytest_cache
