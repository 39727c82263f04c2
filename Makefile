# The README's two commands, `make run` and `make test`, do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run test lint format bench clean

install: $(STAMP)

# Re-installs only when the dependency list changes; safe to run twice.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's chromium + chromedriver for the dashboard's browser test; a no-op once installed.
# Without root or apt the browser test skips with its reason, so this never fails the build.
browser:
	bash scripts/install-browser.sh || echo "chromium not installed: the browser test will skip"

run: install
	$(BIN)/taskctl dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install browser lint
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
