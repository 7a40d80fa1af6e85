# The two commands a newcomer needs: `make run` and `make test`. Everything else sets them up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := train,serve,client,realsense,dev
# System libraries the Python wheels need (pyrealsense2 links libusb); docker-compose validates
# the compose file in the tests (no Docker engine is needed for that).
APT_PACKAGES := libusb-1.0-0 docker-compose postgresql mosquitto chromium-headless-shell

.PHONY: setup system-packages test test-fast test-threads fuzz mutation lint format run default-model clean

setup: system-packages $(VENV)/.installed

# Installs missing Debian packages when running as root; otherwise says what is missing.
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "apt-get install:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "warning: missing system packages:$$missing (run as root, or install them)"; \
	  fi; \
	fi

# Reinstalls only when pyproject.toml changes, so `make setup` is cheap to repeat.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# One worker a core and one more, which fills the time the others wait on real time (pytest-xdist;
# tests/conftest.py keeps a module's tests, and the modules sharing an expensive session fixture,
# on one worker). Bytecode and pytest's rewritten test modules
# are cached even where PYTHONDONTWRITEBYTECODE is set: compiling them again cost each worker
# 6 CPU seconds, about twice what importing torch does (docs/testing.md, "The suite's time").
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n auto
test: setup
	$(PYTEST)

# The edit-run loop (target: under 30 s on 2 cores): the tests that need only the test process
# (`--fast`, tests/conftest.py: not the ones marked slow or integration, which start servers,
# services, browsers or subprocesses, nor the test modules that import torch); `make test` runs
# them all. TESTS=tests/core narrows it to the part being edited.
TESTS ?=
test-fast: setup
	$(PYTEST) -q --fast $(TESTS)

# The floating-point comparisons again on one thread: their tolerances hold for any summation
# order, so the result must not depend on how many threads split a sum. `make test` runs them
# with every core's threads; CI runs this after it.
test-threads: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTEST) -q -m numerics

# Mutation checks of core/ (docs/testing.md), CI's long tier: 60 sampled mutants (a flipped
# comparison, a constant +-1, ...) applied one at a time to a temporary copy, tests/core run on
# each; prints killed/survived and writes runs/mutation/summary.json. About 1-2 min a mutant
# on the 2-core machine; MUTATION_ARGS="--sample 0" runs all of them.
mutation: setup
	$(BIN)/python bench/mutation.py --out runs/mutation $(MUTATION_ARGS)

# The long fuzz tier (docs/security.md): over 10,000 hostile uploads, streams and schema cases
# against a gd-serve subprocess; prints the figures, writes runs/fuzz/summary.json and any
# failing input to runs/fuzz/findings/. `make test` runs the short tier.
fuzz: setup
	GD_FUZZ_TIER=long $(BIN)/python -m pytest tests/fuzz -q -o timeout=3600

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The server on the shipped default model, with the built-in synthetic demo stream: detections
# show in the log, and through the API at http://127.0.0.1:8000 (token: docker/dev-tokens.txt).
run: setup
	$(BIN)/gd-serve --model models/default --demo --tokens-file docker/dev-tokens.txt

# Rebuilds models/default (and its INT8 variant models/default-int8) from scratch: synthetic
# data, gd-prep, gd-train, gd-export, then measures it live on held-out camera-shaped videos
# and writes the model card. About 2 h on 2 cores. The quick preset plus the levers that paid
# (training/configs/default-model.yaml; docs/results.md measures each).
DEFAULT_RUN := runs/default
DEFAULT_CONFIG := training/configs/default-model.yaml
# The score delay is the one bench/live_accuracy.py measured best (docs/results.md): live
# accuracy within 2 % of uploads' for a median event latency of 3 s.
DEFAULT_SCORE_DELAY := 2
LIVE := $(BIN)/python bench/live_accuracy.py --model models/default --all-videos \
	--score-delay $(DEFAULT_SCORE_DELAY)
default-model: setup
	$(BIN)/gd-train pipeline --preset quick --config $(DEFAULT_CONFIG) --workdir $(DEFAULT_RUN)
	$(BIN)/gd-export onnx --checkpoint $(DEFAULT_RUN)/detect/depth.pt --out models/default \
		--name default --overwrite --score-delay $(DEFAULT_SCORE_DELAY)
	$(BIN)/gd-export quantize --bundle models/default --out models/default-int8 --overwrite
	$(LIVE) --camera d435-vga --size 120x160 --seeds 1000 1001 1002 --out $(DEFAULT_RUN)/live/d435-vga
	$(LIVE) --camera d435-vga --size 120x160 --difficulty 0.5 --seeds 1000 \
		--out $(DEFAULT_RUN)/live/difficulty-0.5
	$(LIVE) --camera d435-vga --size 120x160 --seeds 1000 1001 1002 --no-references \
		--out $(DEFAULT_RUN)/live/no-references
	$(BIN)/python bench/live_accuracy.py --model models/default-int8 --all-videos \
		--score-delay $(DEFAULT_SCORE_DELAY) --camera d435-vga --size 120x160 --seeds 1000 1001 1002 \
		--out $(DEFAULT_RUN)/live/int8-d435-vga
	$(BIN)/python -m export.card models/default --command "make default-model" \
		--live $(DEFAULT_RUN)/live/d435-vga/summary.json \
		--live $(DEFAULT_RUN)/live/difficulty-0.5/summary.json \
		--live $(DEFAULT_RUN)/live/no-references/summary.json
	$(BIN)/python -m export.card models/default-int8 --command "make default-model" \
		--live $(DEFAULT_RUN)/live/int8-d435-vga/summary.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
