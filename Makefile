# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every dependency, direct and transitive, pinned with hashes (pyproject.toml keeps the ranges).
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# The compiled catalogues are build output, never committed: setup.py's build_py compiles them
# into a wheel (and beside the .po on an editable install); this recompiles an edited .po.
CATALOGUES := $(patsubst %.po,%.mo,$(wildcard plugin/translations/*/LC_MESSAGES/*.po))
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --resolver=backtracking

.PHONY: run test lint bench soak lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Install exactly the lock (pip refuses anything unpinned or with a wrong hash), then the
# project itself, editable and without dependencies; reinstall whenever the lock changes.
$(RUN_STAMP): $(LOCK) pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(TEST_STAMP): $(TEST_LOCK) pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

%.mo: %.po | $(BIN)/python
	$(BIN)/pybabel compile --statistics -l $(word 3,$(subst /, ,$<)) -i $< -o $@

## run: set up SQLite under var/, seed the demo practice, serve on 127.0.0.1:$ALLIANCE_PORT (5000)
run: $(RUN_STAMP) $(CATALOGUES)
	$(BIN)/alliance-check dev-init
	$(BIN)/alliance-check serve

## test: install the npm packages the tests use (FHIR server, axe-core), lint, then the whole suite
##       (the browser tests need /usr/bin/chromium and /usr/bin/chromedriver: .ci/run installs them)
##       (on PostgreSQL too when ALLIANCE_TEST_DATABASE_URL is set)
test: $(TEST_STAMP) $(CATALOGUES)
	$(BIN)/python -m tests.support.npm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

## lock: resolve both lock files again from pyproject.toml after a dependency changed, keeping
##       every pin that still fits; UPGRADE=1 takes the newest releases the ranges allow.
##       Commit both files with the change that needed them.
# The test lock is constrained by the runtime lock: tests run the versions the service ships with.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet 'pip-tools>=7.4,<8'
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(if $(UPGRADE),--upgrade) \
		-o $(LOCK) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(if $(UPGRADE),--upgrade) \
		--extra test -c $(LOCK) -o $(TEST_LOCK) pyproject.toml

## bench: throughput and latency figures as ratios against same-run baselines
##        (EHR_WRITES=n sets the drain backlog; the issue's figure is 5000)
EHR_WRITES ?= 5000
bench: $(TEST_STAMP) $(CATALOGUES)
	$(BIN)/python -c "from tests.support.fhir_server import ensure_installed; ensure_installed()"
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ehr_drain --writes $(EHR_WRITES)
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.launch
	$(BIN)/python -m bench.ruptures

## soak: 2 web + 2 workers on PostgreSQL, SOAK_SESSIONS (1000) sessions answered, a web and a
##       worker killed -9 and the FHIR server down for a minute; prints acknowledged, invited,
##       answered, written, lost, duplicates; exits non-zero on a missed goal (<= 10 minutes).
##       Its own database (SOAK_DATABASE, default alliance_soak) on the server of
##       ALLIANCE_TEST_DATABASE_URL (else postgres@127.0.0.1:5432), made afresh and dropped.
SOAK_SESSIONS ?= 1000
soak: $(TEST_STAMP) $(CATALOGUES)
	$(BIN)/python -c "from tests.support.fhir_server import ensure_installed; ensure_installed()"
	$(BIN)/python -m bench.soak --sessions $(SOAK_SESSIONS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info build
	rm -rf tests/support/fhir_server/node_modules tests/support/browser/node_modules
	rm -f $(CATALOGUES)
