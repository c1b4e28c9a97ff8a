# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: set up SQLite under var/, seed the demo practice, serve on 127.0.0.1:$ALLIANCE_PORT (5000)
run: $(STAMP)
	$(BIN)/alliance-check dev-init
	$(BIN)/alliance-check serve

## test: install the test FHIR server (npm), lint, then the whole suite
##       (on PostgreSQL too when ALLIANCE_TEST_DATABASE_URL is set)
test: $(STAMP)
	$(BIN)/python -c "from tests.support.fhir_server import ensure_installed; ensure_installed()"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

## bench: throughput and latency figures as ratios against same-run baselines
##        (EHR_WRITES=n sets the drain backlog; the issue's figure is 5000)
EHR_WRITES ?= 5000
bench: $(STAMP)
	$(BIN)/python -c "from tests.support.fhir_server import ensure_installed; ensure_installed()"
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ehr_drain --writes $(EHR_WRITES)
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.launch

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info tests/support/fhir_server/node_modules
