# Two commands on a fresh machine (see README):
#   make demo   install statnet and run `statnet demo` on the local RabbitMQ and PostgreSQL
#   make test   install statnet and run every test (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install services tools bench clean

$(BIN)/statnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=23'
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/statnet

services:
	@scripts/ensure-services

tools:
	@scripts/ensure-tools

demo: install services
	$(BIN)/statnet demo

test: install services tools
	$(BIN)/pytest

bench: install services
	$(BIN)/python tests/bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
