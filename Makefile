# keel: set-up and the two everyday commands. Only python3 (>= 3.11) is needed
# (and a C compiler for the compiled modules, else keel runs as pure Python);
# everything else is installed from the package registries into .venv.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: compile run backtest test typecheck bench lint clean system-packages image

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(VENV)/bin/pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

# The per-bar modules compiled with mypyc (src/compiled_modules.py), rebuilt
# whenever one of their sources changes. mypyc type-checks them against the
# packages installed above, so this install shares the venv (no isolation).
COMPILED := src/compiled_sources.json
COMPILED_SOURCES := $(shell $(PYTHON) src/compiled_modules.py)
$(COMPILED): $(COMPILED_SOURCES) src/compiled_modules.py | $(STAMP)
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .

compile: | $(STAMP)
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .

# The main job on the embedded default: bundled real data replayed as a live
# feed, simulated exchange, no keys, no network. Ctrl-C stops it cleanly.
run: $(STAMP) $(COMPILED)
	$(VENV)/bin/keel run --mode paper $(ARGS)

backtest: $(STAMP) $(COMPILED)
	$(VENV)/bin/keel backtest --output runs/backtest $(ARGS)

# Debian packages the tests run for real (PostgreSQL server, Chromium, ...) and gcc.
system-packages:
	scripts/ensure-system-packages

# mypy first (strict on core, api, risk_management, execution), then the tests.
typecheck: $(STAMP)
	scripts/typecheck

# The system packages (a C compiler among them) before the compiled modules.
test: $(STAMP) system-packages $(COMPILED) typecheck
	$(VENV)/bin/pytest $(ARGS)

# The container image (deploy/Dockerfile); IMAGE_ARGS for more, e.g. --build-arg BASE=...
IMAGE ?= keel:latest
IMAGE_ARGS ?=
image:
	deploy/build-image -t $(IMAGE) $(IMAGE_ARGS)

bench: $(STAMP) $(COMPILED)
	for script in benchmarks/bench_*.py; do $(VENV)/bin/python $$script; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis .mypy_cache build src/compiled_sources.json
	find src -name "*.so" -delete
