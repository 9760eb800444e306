# One Makefile for local work and CI. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=

.PHONY: help install system-deps up down demo serve test test-fast bench lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

system-deps:  ## Debian packages (Redis, PostgreSQL, redis-tools, Chromium) where missing
	@bash infra/scripts/system-deps.sh chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: system-deps $(STAMP)  ## everything the project needs, once

up: install  ## start the embedded stack (Tansu, Redis, PostgreSQL) and keep it running
	$(BIN)/gig-stack up

down:  ## stop what `make up` started
	@[ -x $(BIN)/gig-stack ] && $(BIN)/gig-stack down || true

demo: install  ## a morning of instant hire across the province, with a summary
	$(BIN)/python -m producers.demo

serve: install  ## the stack, dispatcher, presence and the gateway with its pages, until Ctrl-C
	$(BIN)/gig-serve

test: install  ## the whole suite on real services (starts what it needs)
	$(BIN)/python -m infra.stack services
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install  ## pure and in-memory tests only
	$(BIN)/pytest -m "unit or (contract and not integration)" $(PYTEST_ARGS)

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
