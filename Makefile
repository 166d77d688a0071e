# hived: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types pytest bench bench-quick bench-idle agents clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@echo "hived demo: dashboard http://127.0.0.1:7420/  WebSocket ws://127.0.0.1:7420/v1/ws"
	@echo "token (admin, demo only): hived-demo-admin-token"
	@echo "try:  HIVED_TOKEN=hived-demo-admin-token $(BIN)/hivectl status      (Ctrl-C stops hived)"
	$(BIN)/hived --config examples/hived.toml

test: $(STAMP) lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check hived tests bench examples man
	$(BIN)/ruff format --check hived tests bench examples man

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run --full

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

bench-idle: $(STAMP)
	$(BIN)/python -m bench.run --idle

# The real agent programs the driver tests run (pinned, from npm, into .agents/); the tests that
# need one skip, saying so, where it is missing. .ci/run calls this.
agents:
	bash tests/realagents/install_claude.sh
	bash tests/realagents/install_codex.sh
	bash tests/realagents/install_acp.sh

clean:
	rm -rf $(VENV) .state build dist *.egg-info

# man pages and install (issue: ship it as a system service)
include mk/service.mk
