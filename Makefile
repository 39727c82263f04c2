# The README's two commands, `make run` and `make test`, do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run clean-data test test-python-emulator pubsub-system-tests chaos lint format bench clean

# Your task modules (tasks/) are importable by name, as in the images.
export PYTHONPATH := $(CURDIR)/tasks$(if $(PYTHONPATH),:$(PYTHONPATH))

export HAS_GOOGLE_PUBSUB = from devstack.emulators.google_pubsub import find_google_pubsub_emulator as f; raise SystemExit(f() is None)

install: $(STAMP)

# Re-installs only when the dependency list changes; safe to run twice.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

# Debian's chromium + chromedriver for the dashboard's browser test; a no-op once installed.
# Without root or apt the browser test skips with its reason, so this never fails the build.
browser:
	bash scripts/install-browser.sh || echo "chromium not installed: the browser test will skip"

# Exits non-zero when the stack cannot start (a busy port, say) or its API dies.
run: install
	$(BIN)/taskctl dev

# `make run` keeps topics, messages and objects in .local/data across restarts; this wipes
# them (and .local/logs). Refused while the stack runs.
clean-data: install
	$(BIN)/python -m devstack.clean_data

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Six workers on two cores: the suite mostly waits on emulators and deadlines, so CPU stays
# below saturation (8 min here against 10 with four; TEST_WORKERS=4 if a machine struggles).
# Work-stealing, so a few long fault tests do not end up queued behind one another.
# Where Google's Pub/Sub emulator is installed the first run uses it; the tests whose
# outcome rests on Pub/Sub's delivery semantics (leases, redelivery, dead-lettering,
# replays, outages) then run again on the pure-Python emulator, so both stay proven
# (elsewhere the first run already used it, for everything). The conformance suite
# compares the two emulators call by call.
TEST_WORKERS ?= 6
PUBSUB_SEMANTICS_TESTS := $(addprefix tests/integration/,test_guarantees.py \
  test_fault_injection.py test_outages.py test_worker_drain.py test_dlq_cli.py \
  test_queues.py test_cancellation.py test_delayed_tasks.py test_on_demand.py \
  test_bounded_tasks.py test_backlog.py test_admin_tasks.py)
test: install browser lint
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal
	@if $(BIN)/python -c "$$HAS_GOOGLE_PUBSUB"; then \
	  echo "== Pub/Sub semantics again, on the pure-Python Pub/Sub emulator"; \
	  TASKCTL_PUBSUB_EMULATOR=python $(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal $(PUBSUB_SEMANTICS_TESTS); \
	fi

test-python-emulator: install
	TASKCTL_PUBSUB_EMULATOR=python $(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal tests/integration

# Google's own google-cloud-pubsub system tests (tests/system.py of the pinned sdist, cached
# in .cache/) against our Pub/Sub emulator and Google's: about 3 and 4½ minutes, most of it
# the tests' own waits, so not part of `make test`.
pubsub-system-tests: install
	$(BIN)/python -m devstack.pubsub_system_tests

# The fault campaign (chaos/, README "Fault campaign"): CHAOS_TASKS tasks accepted through the
# API under at least CHAOS_FAULTS seeded faults, checked task by task; on our Pub/Sub emulator,
# then on Google's where installed, up to 20 minutes each. Reports: bench/results/chaos-*.json;
# logs and a dossier per violating task: .cache/chaos/<emulator>-seed<seed>/. Fails if either
# run finds a violation (both still run).
CHAOS_SEED ?= 1
CHAOS_TASKS ?= 10000
CHAOS_FAULTS ?= 200
chaos: install
	@status=0; for emulator in python google; do \
	  if [ $$emulator = google ] && ! $(BIN)/python -c "$$HAS_GOOGLE_PUBSUB"; then \
	    echo "== Google's Pub/Sub emulator is not installed: its campaign is skipped"; continue; \
	  fi; \
	  echo "== chaos campaign on the $$emulator Pub/Sub emulator"; \
	  rm -rf .cache/chaos/$$emulator-seed$(CHAOS_SEED); \
	  $(BIN)/python -m chaos run --seed $(CHAOS_SEED) --tasks $(CHAOS_TASKS) \
	    --faults $(CHAOS_FAULTS) --emulator $$emulator \
	    --log-dir .cache/chaos/$$emulator-seed$(CHAOS_SEED) \
	    --report bench/results/chaos-$$emulator.json || status=1; \
	done; exit $$status

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
