# make run     install, build the example table, serve it on 127.0.0.1:8000
# make test    install, lint and type checks, then every test (installs nginx, systemd tools, wrk with apt when missing)
# make test-fast  tests/unit only: the inner loop, well under a minute
# make lint     ruff (lint and format) and mypy
# make bench   engine, HTTP and write benchmarks -> docs/bench/*.json, docs/img/*.png
# make image   the container image kv:dev and the nginx front kv-nginx:dev (deploy/docker/make-image.sh)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := $(VENV)/.sysdeps
# Debian packages the tests and benchmarks drive: real nginx, systemd-analyze, wrk, /usr/bin/time.
APT_PACKAGES := nginx-light systemd wrk time

.PHONY: run test test-fast lint install sysdeps bench bench-engine bench-http bench-writes bench-container plots docnumbers loadtest drills clean image test-container

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py kv/_speedups.c | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(SYSDEPS_STAMP): | $(BIN)/python
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	[ -x /usr/bin/time ] || missing="$$missing time"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $(SYSDEPS_STAMP)

sysdeps: $(SYSDEPS_STAMP)

example.kvt: example.data $(STAMP)
	$(BIN)/kv build example.data -o example.kvt

run: install example.kvt
	$(BIN)/kv serve example.data

# The second run: the engine tests again on the pure-Python paths (kv/speedups.py).
PURE_PYTHON_TESTS := $(addprefix tests/unit/,test_table.py test_corruption.py test_build.py test_fastpath.py test_shard_build.py \
	test_string_table.py test_string_build.py)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-fast: install
	$(BIN)/python -m pytest -q tests/unit

test: install sysdeps lint
	$(BIN)/python -m pytest -q tests
	KV_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PURE_PYTHON_TESTS)

drills: install sysdeps
	$(BIN)/python -m pytest -q -m drill tests

# make loadtest LOCUST_TIME=15 for a shorter run
LOCUST_TIME ?= 60
loadtest: install example.kvt
	$(BIN)/python loadtest/run_locust.py --data example.data --time $(LOCUST_TIME)

bench-engine: install sysdeps
	$(BIN)/python loadtest/bench_engine.py

bench-http: install sysdeps
	$(BIN)/python loadtest/bench_http.py

# Issue 13's targets (writes over immutable tables). A quick look at small size:
# make bench-writes BENCH_WRITES_ARGS='--records 100000 --changes 10000 --rounds 3 --duration 3'
BENCH_WRITES_ARGS ?=
bench-writes: install sysdeps
	$(BIN)/python loadtest/bench_writes.py $(BENCH_WRITES_ARGS)

plots: install
	$(BIN)/python loadtest/plots.py

# Rewrite the numbers README.md and docs/*.md cite from docs/bench/*.json.
docnumbers: install
	$(BIN)/python loadtest/docnumbers.py

# The container targets (issue 14): image size, start to first 200, GET rate in
# a container against the same server outside it. Builds kv:dev when outdated and
# uses the engine `make image` used (a private dockerd where none answered).
bench-container: install image
	docker version >/dev/null 2>&1 || export $$(deploy/docker/private-dockerd.sh host); \
	$(BIN)/python deploy/docker/bench.py --out docs/bench/container.json

bench: bench-engine bench-http bench-writes bench-container plots docnumbers

# kv:dev and kv-nginx:dev. Uses the engine DOCKER_HOST names; where none answers,
# starts a private one (deploy/docker/private-dockerd.sh, root) and says how to reach it.
image:
	deploy/docker/make-image.sh

# Only the container tests (`make test` runs them too): a real Docker engine, the image built if outdated.
test-container: install
	$(BIN)/python -m pytest -q -m container tests/integration/test_container.py

clean:
	rm -rf $(VENV) example.kvt loadtest/results bench-data
