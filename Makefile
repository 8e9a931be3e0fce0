# The two commands of the README: `make repro` and `make test`.
SHELL := /bin/bash
.PHONY: setup repro test lint

setup:
	@bash scripts/setup.sh

repro: setup
	@source scripts/env.sh && dvc repro

test: setup
	@source scripts/env.sh && python -m pytest -q

lint: setup
	@source scripts/env.sh && ruff check get3d tasks flows tests
