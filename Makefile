# hived: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test lint types pytest bench bench-node bench-quick bench-idle bench-agent-path bench-history bench-wire bench-cluster soak agents web-vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Two stamps: `make run` installs only what hived needs to run; `make test` adds the test
# extras (Playwright, mypy, ruff…) on top.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

# The banner is printed once hived is ready, never before a start that fails.
run: $(RUN_STAMP)
	@$(BIN)/python examples/run_demo.py

test: $(STAMP) lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check hived tests bench examples man
	$(BIN)/ruff format --check hived tests bench examples man

types: $(STAMP)
	$(BIN)/mypy

# The in-process tests are CPU-bound: one worker per core (pytest-xdist) halves their time. The
# end-to-end tests run one at a time: each starts daemons, shims and agents that use the cores.
pytest: $(STAMP)
	$(BIN)/pytest -q -n 2 --ignore=tests/e2e
	$(BIN)/pytest -q tests/e2e

bench: $(STAMP) bench-node
	$(BIN)/python -m bench.run --full

bench-quick: $(STAMP) bench-node
	$(BIN)/python -m bench.run --quick

# The Node.js peer's packages (ws, bufferutil), pinned by bench/node/package-lock.json, into
# bench/node/node_modules. No install scripts: bufferutil ships a prebuilt linux-x64 binary,
# which node-gyp-build loads at run time. The benchmark leaves the peer out, saying why, where
# node is missing.
NODE_STAMP := bench/node/node_modules/.package-lock.json
bench-node: $(NODE_STAMP)

$(NODE_STAMP): bench/node/package.json bench/node/package-lock.json
	cd bench/node && npm ci --ignore-scripts --no-audit --no-fund

bench-idle: $(STAMP)
	$(BIN)/python -m bench.run --idle

bench-agent-path: $(STAMP)
	$(BIN)/python -m bench.run --agent-path

# Bytes per event per encoding (JSON, MessagePack, each with permessage-deflate) on the real
# agent transcripts, and idle RSS per connection with compression on and off (issue 18, part 3).
bench-wire: $(STAMP)
	$(BIN)/python -m bench.wire_bytes

# Search, the usage ledger and the index's cost on a store of 2,000,000 events (issue 16).
bench-history: $(STAMP)
	$(BIN)/python -m bench.bench_history

# An agent on node B, 100 subscribers on node A, through a redis-server it starts; beside one
# node, in the same run (docs/cluster.md). Needs redis-server.
bench-cluster: $(STAMP)
	$(BIN)/python -m bench.cluster

# Ten minutes of churn against the real daemon; fails on RSS or fd growth, or a lost or doubled
# event (bench/soak.py). SOAK_S=60 for a shorter run.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration-s $(or $(SOAK_S),600)

# The real agent programs the driver tests run (pinned, from npm, into .agents/); the tests that
# need one skip, saying so, where it is missing. .ci/run calls this.
agents:
	bash tests/realagents/install_claude.sh
	bash tests/realagents/install_codex.sh
	bash tests/realagents/install_acp.sh

# The dashboard's third-party files (hived/web/vendor/PINS), fetched from the npm registry and
# checked against the SHA256SUMS kept in the repo; UPDATE=1 rewrites the sums after a version bump.
web-vendor:
	UPDATE=$(UPDATE) sh hived/web/vendor/fetch.sh

clean:
	rm -rf $(VENV) .state build dist *.egg-info

# man pages and install (issue: ship it as a system service)
include mk/service.mk
