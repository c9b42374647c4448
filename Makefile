# The two set-up commands: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint typecheck unit test-deps bench failover-bench jepsen-redis clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("fivenines needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

## Run the bundled demo: 2 active + 1 standby demo instances behind the load balancer.
demo: $(VENV)/.installed
	$(BIN)/fivenines up examples/demo.yaml

## Lint, type-check and run the whole test suite (installs the Debian packages tests need).
test: $(VENV)/.installed-dev test-deps
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-deps:
	scripts/install-test-deps

bench: $(VENV)/.installed-dev
	scripts/install-test-deps --bench
	$(BIN)/python bench/proxy_bench.py

failover-bench: $(VENV)/.installed-dev
	scripts/install-test-deps --bench
	$(BIN)/python bench/failover_bench.py

clean:
	rm -rf $(VENV) .fivenines .mypy_cache .ruff_cache .pytest_cache

## Jepsen-style check of replicated Redis: 24 primary failures, acknowledged writes lost (0 in sync).
jepsen-redis: $(VENV)/.installed-dev
	scripts/install-test-deps
	$(BIN)/python bench/jepsen_redis.py --failures 24 --durability sync
