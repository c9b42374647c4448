# The two set-up commands: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint typecheck unit test-deps compile bench failover-bench cluster-bench jepsen-redis restore-bench clean

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

# The data plane compiled with mypyc (fivenines.accel; the sources run when this fails or is stale).
# Under CI (CI=1, true or yes: scripts/compile reads it, as the tests do) a failed build fails make.
$(VENV)/.compiled: $(VENV)/.installed-dev scripts/compile src/fivenines/accel.py \
		src/fivenines/_express.c $(wildcard src/fivenines/core/*.py src/fivenines/proxy/*.py) | test-deps
	$(BIN)/python scripts/compile
	touch $@

compile: $(VENV)/.compiled

## Run the bundled demo: 2 active + 1 standby demo instances behind the load balancer.
demo: $(VENV)/.installed
	$(BIN)/fivenines up examples/demo.yaml

## Lint, type-check and run the whole test suite (installs the Debian packages tests need).
test: $(VENV)/.installed-dev test-deps $(VENV)/.compiled
	$(BIN)/ruff check src tests $(wildcard bench) conftest.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	@echo "again from source (FIVENINES_PURE=1): unit tests, doctests and the data-plane tests"
	FIVENINES_PURE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit src/fivenines \
		$(wildcard tests/integration/test_proxy_*.py) tests/integration/test_hostile.py

test-deps:
	PYTHON_FOR_HEADERS=$(BIN)/python scripts/install-test-deps

bench: $(VENV)/.installed-dev $(VENV)/.compiled
	scripts/install-test-deps --bench
	$(BIN)/python bench/proxy_bench.py

failover-bench: $(VENV)/.installed-dev $(VENV)/.compiled
	scripts/install-test-deps --bench
	$(BIN)/python bench/failover_bench.py

## A pair of balancers behind a floating address when the active one fails (kill -9, SIGSTOP, cable,
## partition): HAProxy + keepalived beside fivenines vrrp and etcd modes, in the namespace rig (needs root).
cluster-bench: $(VENV)/.installed-dev
	PYTHON_FOR_HEADERS=$(BIN)/python scripts/install-test-deps
	scripts/install-test-deps --bench
	$(BIN)/python bench/cluster_bench.py

clean:
	rm -rf $(VENV) .fivenines .mypy_cache .ruff_cache .pytest_cache build src/fivenines/_compiled.json
	find src -name '*.so' -delete

## Jepsen-style check of replicated Redis: 24 primary failures, acknowledged writes lost (0 in sync).
jepsen-redis: $(VENV)/.installed-dev
	scripts/install-test-deps
	$(BIN)/python bench/jepsen_redis.py --failures 24 --durability sync

## RPO and RTO of a replicated Redis group restored from backup after a FLUSHALL (1 GB: SIZE=50MB for a smoke run).
SIZE ?= 1GB
restore-bench: $(VENV)/.installed-dev
	scripts/install-test-deps
	$(BIN)/python bench/restore_bench.py --size $(SIZE)
