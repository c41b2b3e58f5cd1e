# One set of entry points; CI only calls `make test`. `make help` lists them.
.DEFAULT_GOAL := help
VENV := .venv/bin
SRC := src tests benchmarks examples scripts

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: ## set up .venv for running (torch, cortex, the default model's wheel)
	@scripts/setup.sh run

install-dev: ## set up .venv for development (adds test, lint and docs tools)
	@scripts/setup.sh dev

serve: install ## run the gateway with the embedded default model on 127.0.0.1:31313
	$(VENV)/cortex serve

lint: install-dev ## ruff format --check and ruff check
	$(VENV)/ruff format --check $(SRC)
	$(VENV)/ruff check $(SRC)

check: install-dev ## mypy --strict on src/
	$(VENV)/mypy

docs: install-dev ## check the generated config reference, build the docs site strictly
	$(VENV)/python scripts/gen_config_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/mkdocs build --strict --quiet

pytest: install-dev ## the test suite
	$(VENV)/python -m pytest -q --durations=20

test: lint check pytest docs ## everything CI runs: lint, types, tests, docs

lock: ## refresh locks/ after changing dependencies in pyproject.toml (then commit locks/)
	python3 scripts/lock.py

bench: install-dev ## the CPU benchmarks (see docs/benchmarks.md)
	$(VENV)/python benchmarks/bench_translate.py
	$(VENV)/python benchmarks/bench_engine.py

.PHONY: help install install-dev serve lint check docs pytest test lock bench
