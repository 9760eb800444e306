# One Makefile for local work and CI. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=
BROKERS ?= 1

.PHONY: help install system-deps up down demo serve test test-fast chaos bench lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

system-deps:  ## Debian packages (Redis, PostgreSQL, PostGIS, kcat, Java, Maven, Chromium, CJK fonts) where missing
	@bash infra/scripts/system-deps.sh chromium fonts-noto-cjk postgis

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: system-deps $(STAMP)  ## everything the project needs, once

up: install  ## start the embedded stack (Apache Kafka, Redis, PostgreSQL); BROKERS=3 for three Kafka nodes
	$(BIN)/gig-stack up --brokers $(BROKERS)

down:  ## stop what `make up` started
	@[ -x $(BIN)/gig-stack ] && $(BIN)/gig-stack down || true

demo: install  ## a morning of instant hire across the province, with a summary
	$(BIN)/python -m producers.demo

serve: install  ## the stack, dispatcher, presence and the gateway with its pages, until Ctrl-C (port: GIG_GATEWAY__PORT, 8000)
	$(BIN)/gig-serve

test: install  ## the whole suite on real services (starts what it needs); short chaos scenarios only
	$(BIN)/python -m infra.stack services
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-fast: install  ## pure and in-memory tests only
	$(BIN)/pytest -m "unit or (contract and not integration)" $(PYTEST_ARGS)

chaos: install  ## full chaos and hostile-input suites, then the auditor; writes bench/results/{chaos,hostile}.*
	$(BIN)/python -m infra.stack services
	CHAOS_RESULTS=bench/results $(BIN)/pytest -m "chaos and slow" tests/chaos $(PYTEST_ARGS)
	HOSTILE_RESULTS=bench/results $(BIN)/pytest -s tests/hostile/test_stream.py $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)  ## benchmarks; QUICK=1 for the 100 k-worker run
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,)

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: down
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache
