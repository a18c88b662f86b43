# synthreview: `make demo` serves the app with demo data, `make test` runs the test suite.
# Both install into ./.venv from requirements.lock (exact versions) on first use.

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format lock bench clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "synthreview needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $(STAMP)

# The local settings every manage.py command reads (see load_env_file in settings.py); written
# once, never overwritten, never committed.
.env:
	@$(PYTHON) -c 'import pathlib, secrets; print("# Local demo settings written by make demo; never commit this file.\nDEBUG=1\nSECRET_KEY=" + secrets.token_urlsafe(50) + "\nSQLITE_PATH=" + str(pathlib.Path("db.sqlite3").resolve()))' > $@
	@echo "Wrote .env (DEBUG=1, a new SECRET_KEY, SQLITE_PATH)."

demo: $(STAMP) .env
	@$(BIN)/python manage.py migrate --noinput -v 0
	@$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  synthreview demo: http://127.0.0.1:$(PORT)/   login: demo / demo"
	@echo ""
	@$(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# Tests need a SECRET_KEY (never used outside the test run); any other env var passes through,
# and a local .env is ignored so the suite runs the same everywhere.
test: $(STAMP)
	SYNTHREVIEW_ENV_FILE= SECRET_KEY=$${SECRET_KEY:-make-test-only-key} $(BIN)/pytest $(PYTEST_ARGS)

# ruff, then the import contracts in pyproject.toml (app direction, no cycles).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve the pinned versions from pyproject.toml (run after changing dependencies).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check ".[dev]"
	.lock-venv/bin/python -m pip freeze --exclude synthreview > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
