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

demo: $(STAMP)
	@DEBUG=1 $(BIN)/python manage.py migrate --noinput -v 0
	@DEBUG=1 $(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  synthreview demo: http://127.0.0.1:$(PORT)/   login: demo / demo"
	@echo ""
	@DEBUG=1 $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# Tests need a SECRET_KEY (never used outside the test run); any other env var passes through.
test: $(STAMP)
	SECRET_KEY=$${SECRET_KEY:-make-test-only-key} $(BIN)/pytest $(PYTEST_ARGS)

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
