# dmds: `make run` starts the whole service, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= dmds-data
PORT ?= 7000
WS_PORT ?= 5000

.PHONY: run test install lint typecheck pytest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The SOAP normaliser in the background, the server in the foreground; Ctrl-C (or the server
# stopping for any reason) stops both.
run: $(STAMP)
	@$(BIN)/dmds ws --host 127.0.0.1 --port $(WS_PORT) & ws=$$!; \
	trap 'kill $$ws 2>/dev/null; wait $$ws 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dmds serve --port $(PORT) --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
