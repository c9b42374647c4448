# The two set-up commands: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo cluster-demo test check lint typecheck unit test-deps compile bench tls-bench failover-bench cluster-bench scaling-bench jepsen-redis restore-bench clean spec-doc

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("fivenines needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installing the package (editable) also compiles its data plane in place: setup.py, with mypyc
# (fivenines.accel). Without a C compiler it installs all the same and runs from source.
# Under CI (CI=1, true or yes: fivenines.accel.under_ci, the rule the tests use) a failed build
# fails make (FIVENINES_BUILD=strict).
export FIVENINES_BUILD := $(shell $(PYTHON) scripts/compile --build-mode)

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# Rebuilds the data plane in place when fivenines.accel finds the build stale (a source it depends
# on changed since): scripts/compile runs `pip install -e .` again. A build that failed (no C
# compiler) is tried again only when a source changed, or with FORCE=1.
compile: $(VENV)/.installed
	$(BIN)/python scripts/compile $(if $(FORCE),--force)

## Run the bundled demo: 2 active + 1 standby demo instances behind the load balancer.
demo: compile
	$(BIN)/fivenines up examples/demo.yaml

## Two fivenines nodes, a floating address and etcd in network namespaces on this machine (needs root).
cluster-demo: compile
	$(BIN)/python -m fivenines.cluster_demo

## Lint, type-check and run the whole test suite (installs the Debian packages tests need).
# Tests run in TEST_WORKERS pytest processes (pytest-xdist, an idle one takes tests from a busy one): most
# integration tests wait on processes they started, so two share 2 cores well.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal
test: test-deps $(VENV)/.installed-dev compile
	$(BIN)/ruff check src tests $(wildcard bench) conftest.py setup.py scripts/specdoc.py
	$(BIN)/mypy
	$(PYTEST)
	@echo "again from source (FIVENINES_PURE=1): unit tests, doctests and the data-plane tests"
	FIVENINES_PURE=1 $(PYTEST) -p no:cacheprovider tests/unit src/fivenines \
		$(wildcard tests/integration/test_proxy_*.py) tests/integration/test_hostile.py tests/integration/test_tcp.py

## docs/spec.md, the spec reference, generated from the model (after changing spec.py; a test checks it).
spec-doc: $(VENV)/.installed
	$(BIN)/python scripts/specdoc.py > docs/spec.md.tmp && mv docs/spec.md.tmp docs/spec.md

# First in `make test`: under CI the install that follows must find gcc and the Python headers.
test-deps: $(BIN)/python
	PYTHON_FOR_HEADERS=$(BIN)/python scripts/install-test-deps

# The bench installs the checkout with `pip install .` into a venv of its own (build/bench-venv) and
# measures that: what users install. BASELINE=REV also installs git revision REV (build/bench-venv-REV)
# and runs it interleaved in the same run: this build's ratio to REV's, e.g. BASELINE=7da16e1.
# Then the TLS rows (bench/tls_bench.py, also alone as `make tls-bench`).
bench: $(VENV)/.installed-dev
	scripts/install-test-deps --bench
	$(BIN)/python bench/proxy_bench.py $(if $(BASELINE),--baseline $(BASELINE)); plain=$$?; \
	$(BIN)/python bench/tls_bench.py; tls=$$?; exit $$((plain | tls))

## https listener vs HAProxy 2.6 (same ECDSA P-256 certificate and policy): keep-alive, new TLS, handshakes
## with and without resumption, interleaved (docs/dataplane.md). `bench/tls_bench.py --quick`: a smoke run.
tls-bench: $(VENV)/.installed-dev
	scripts/install-test-deps --bench
	$(BIN)/python bench/tls_bench.py

failover-bench: $(VENV)/.installed-dev compile
	scripts/install-test-deps --bench
	$(BIN)/python bench/failover_bench.py

## A pair of balancers behind a floating address when the active one fails (kill -9, SIGSTOP, cable,
## partition): HAProxy + keepalived beside fivenines vrrp and etcd modes, in the namespace rig (needs root).
cluster-bench: $(VENV)/.installed-dev
	PYTHON_FOR_HEADERS=$(BIN)/python scripts/install-test-deps
	scripts/install-test-deps --bench
	$(BIN)/python bench/cluster_bench.py

## Elastic scaling: a 1x -> 5x -> 1x load against fixed min, fixed max and scaling: (docs/scaling.md; 5-6 min).
scaling-bench: $(VENV)/.installed-dev compile
	$(BIN)/python bench/scaling_bench.py

clean:
	rm -rf $(VENV) .fivenines .mypy_cache .ruff_cache .pytest_cache build src/fivenines/_compiled.json
	find src -name '*.so' -delete

## Jepsen-style check of replicated Redis in the namespace rig (root): 24 real faults (kill -9, SIGSTOP, nft partitions,
## link down, packet loss), acknowledged writes lost (0 in sync, exit 1 otherwise); at most 300 s, about 2 min.
jepsen-redis: $(VENV)/.installed-dev
	scripts/install-test-deps
	$(BIN)/python bench/jepsen_redis.py --failures 24 --durability sync

## RPO and RTO of a replicated Redis group restored from backup after a FLUSHALL (1 GB: SIZE=50MB for a smoke run).
SIZE ?= 1GB
restore-bench: $(VENV)/.installed-dev
	scripts/install-test-deps
	$(BIN)/python bench/restore_bench.py --size $(SIZE)
