# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install what they
# need on first use; stamp files make a second run skip the installs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# constraints.txt pins torch==2.13.0 (the local CPU build on this machine; an unpinned torch
# would pull several GB of CUDA packages). pyproject.toml keeps a range for users elsewhere.
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint format docs clean bench bench-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/jumok demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(VENV)/.installed
	$(BIN)/python -m jumok.app.docgen

# Training throughput of the date model, then (when ../shared/data/multi30k exists) of the
# Multi30k model; add BENCH_RUN=RUN_DIR to time decoding test2016 with a trained Multi30k run too.
# Each script prints a baseline from the same run beside its figures (docs/performance.md).
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/date_core.py --steps 40
	@if [ -f ../shared/data/multi30k/train.en ]; then \
		$(BIN)/python benchmarks/train_speed.py --steps 40 --rounds 1; \
	else echo "bench: ../shared/data/multi30k is missing; skipping the Multi30k benchmarks"; fi
	@if [ -n "$(BENCH_RUN)" ]; then $(BIN)/python benchmarks/decode_speed.py $(BENCH_RUN); fi

# Optional, never part of `make test` or CI: installs JoeyNMT 2.3.0 and OpenNMT-py 3.5.1 into
# .venvs/ (first time only), trains them beside jumok on ../shared/data, then decodes test2016
# with OpenNMT-py's and jumok's Multi30k models (benchmarks/README.md).
# Options go through BENCH_PEERS_ARGS, e.g. make bench-peers BENCH_PEERS_ARGS="--task multi30k".
BENCH_PEERS_ARGS ?= --task all
bench-peers: $(VENV)/.installed
	$(BIN)/python benchmarks/peers/run.py $(BENCH_PEERS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
