# keel: `make demo` runs the demo, `make test` runs the tests; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/keel demo $(ARGS)

test: $(BIN)/.installed
	bash ops/scripts/install-services.sh
	$(BIN)/python -m pytest $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check engine feeds strategies ops tests bench
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) var build *.egg-info
