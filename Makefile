# redline: two commands. `make run` serves the API and widget on the bundled samples; `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint system-deps clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,batch]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/redline datasets load-samples --missing
	$(BIN)/redline serve --host $(HOST) --port $(PORT)

# Debian packages the suite drives for real: Chromium for the widget, PostgreSQL for the store, PostGIS and wrk for benchmarks.
system-deps:
	@bash .ci/system-deps

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks.check --scale 0.1 --sites 500

clean:
	rm -rf $(VENV) .redline .redline-bench test-artifacts
