# The two commands a fresh machine needs:
#   make demo   - virtualenv + embedded PostgreSQL + the main job (migrate.yml on inventories/local)
#   make test   - virtualenv + embedded PostgreSQL + the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.test-installed-$(shell cksum requirements-test.txt | cut -d' ' -f1)
# Two workers: this runner has two cores (each test uses its own databases and directories).
PYTEST_WORKERS ?= 2

.PHONY: demo test test-db lint bench bench-deps db db-stop clean

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

# Test-only packages (third-party Alembic projects, asyncpg, pytest-xdist): never needed by the playbooks.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	@rm -f $(VENV)/.test-installed-* && touch $@

db: $(STAMP)
	$(BIN)/python scripts/embedded_postgres.py start

demo: db
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook playbooks/migrate.yml -i inventories/local

test: db $(TEST_STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=15

# The module and chain tests again, against the server in PG_TEST_DSN (CI: the machine's PostgreSQL 15).
# Playbooks and molecule scenarios run once, in `make test`, on the embedded server.
test-db: $(TEST_STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "db and not playbook and not molecule"

lint: $(STAMP)
	$(BIN)/ruff check library module_utils plugins tests scripts bench alembic release_manager
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production playbooks roles

# Bench-only packages (matplotlib for bench/scale.png): bench/requirements.txt, never in requirements*.txt.
bench-deps: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt

bench: db bench-deps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/run_benchmarks.py

db-stop: $(STAMP)
	$(BIN)/python scripts/embedded_postgres.py stop

clean: db-stop
	rm -rf .state reports
