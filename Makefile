# make run   install, build the example table, serve it on 127.0.0.1:8000
# make test  install, run every test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench bench-engine bench-http loadtest drills clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

example.kvt: example.data $(STAMP)
	$(BIN)/kv build example.data -o example.kvt

run: install example.kvt
	$(BIN)/kv serve example.data

test: install
	$(BIN)/python -m pytest -q tests

bench-engine: install
	$(BIN)/python loadtest/bench_engine.py

bench: bench-engine

clean:
	rm -rf $(VENV) example.kvt loadtest/results
