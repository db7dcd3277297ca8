# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench bench-filter lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/vcr-agent lab demo

test: setup
	$(VENV)/bin/pytest -q tests

bench: setup
	$(VENV)/bin/vcr-agent bench

bench-filter: setup
	$(VENV)/bin/vcr-agent bench --suite filter

clean:
	-$(VENV)/bin/vcr-agent lab down
	rm -rf $(VENV) *.egg-info .pytest_cache
