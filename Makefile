# burnwatch developer tasks; `make help` lists them. Everything runs from the repo root and installs
# what it needs itself: a virtualenv in .venv and a local Kafka node (deploy/kafka/kafka.sh).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA := deploy/kafka/kafka.sh

# The detectors' compiled kernel (kernel/, Rust), built with cargo into .venv. KERNEL=auto (the default,
# but under CI=true) builds it when cargo is on PATH and otherwise goes on without it, KERNEL=on (the
# default under CI=true, as .ci/run runs) requires it, KERNEL=off leaves it out. Without it the detector
# feed runs its pure-Python code (BURNWATCH_DETECTOR_KERNEL=python) and the kernel's own tests are skipped.
KERNEL ?= $(if $(filter true,$(CI)),on,auto)
# cargo on PATH, or where rustup puts it when a non-login shell's PATH lacks it
CARGO ?= $(or $(shell command -v cargo 2>/dev/null),$(wildcard $(HOME)/.cargo/bin/cargo))
KERNEL_STAMP := $(VENV)/.kernel-built
KERNEL_SOURCES := kernel/Cargo.toml kernel/Cargo.lock kernel/pyproject.toml $(wildcard kernel/src/*.rs)
ifeq ($(KERNEL),auto)
KERNEL_BUILD := $(if $(CARGO),on,off)
ifeq ($(KERNEL_BUILD),off)
$(info make: no cargo on PATH: the detector feed runs its pure-Python code (Rust from rustup.rs builds the kernel))
endif
else
KERNEL_BUILD := $(KERNEL)
endif
ifeq ($(KERNEL_BUILD),off)
INSTALLED := $(STAMP)
export BURNWATCH_DETECTOR_KERNEL := python
else
INSTALLED := $(STAMP) $(KERNEL_STAMP)
endif

KAFKA_HOST ?= localhost
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
export KAFKA_HOST KAFKA_PORT KAFKA_CONTROLLER_PORT

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k pricing -x"`.
PYTEST_ARGS ?=

# The first Python >= 3.11 on PATH; override with `make PYTHON=/path/to/python3.12`.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_PROGRESS_BAR := off

.PHONY: help venv install kafka-start kafka-stop kafka-status test lint demo bench clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+( [a-z-]+)*:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

venv install: $(INSTALLED) ## create .venv, install burnwatch[dev], build the detector kernel (KERNEL=auto|on|off)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: need Python >= 3.11 on PATH (or PYTHON=/path/to/python3.11)" >&2; exit 1; }
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "==> $(VENV) has a Python older than 3.11; recreating it"; rm -rf $(VENV); fi
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
		echo "==> $(VENV) is incomplete (no pip; an interrupted install?); recreating it"; rm -rf $(VENV); fi
	@if [ ! -x $(BIN)/python ]; then \
		echo "==> creating $(VENV) with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv $(VENV) || { echo "make: 'python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }; \
	fi
	@echo "==> installing burnwatch[dev] into $(VENV)"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

$(KERNEL_STAMP): $(STAMP) $(KERNEL_SOURCES)
	@test -n "$(CARGO)" || { echo "make: KERNEL=on, but the detector kernel (kernel/) needs" \
		"Rust's cargo (rustup.rs); KERNEL=auto or off runs the pure-Python detector feed" >&2; exit 1; }
	@echo "==> building the detector kernel (kernel/, Rust, $$($(CARGO) --version)) into $(VENV)"
	@PATH="$(dir $(CARGO)):$$PATH" $(BIN)/python -m pip install --quiet ./kernel
	@touch $@

kafka-start: ## start the local Kafka node (KAFKA_PORT, default 9092; idempotent)
	@$(KAFKA) start

kafka-stop: ## stop the local Kafka node
	@$(KAFKA) stop

kafka-status: ## is the local Kafka node running?
	@$(KAFKA) status

# The broker is stopped on every way out (failure, Ctrl-C); all three checks run even if one fails,
# and the exit status is the first failure's.
test: $(INSTALLED) ## start Kafka, run pytest, lint-imports and ruff, stop Kafka
	@trap '$(KAFKA) stop' EXIT; trap 'echo "==> interrupted"; exit 130' INT TERM; \
	$(KAFKA) start; \
	status=0; results=(); \
	run() { local name=$$1; shift; echo "==> $$name"; \
		if "$$@"; then results+=("$$name: ok"); \
		else local rc=$$?; results+=("$$name: FAILED ($$rc)"); [ $$status -ne 0 ] || status=$$rc; fi; }; \
	contracts() { local out; if out="$$($(BIN)/lint-imports 2>&1)"; then \
		grep -E ' KEPT$$|^Contracts:' <<<"$$out"; else echo "$$out"; return 1; fi; }; \
	run pytest env BURNWATCH_TEST_BOOTSTRAP=$(KAFKA_HOST):$(KAFKA_PORT) $(BIN)/pytest $(PYTEST_ARGS); \
	run lint-imports contracts; \
	run ruff $(BIN)/ruff check .; \
	echo "==> summary"; printf '    %s\n' "$${results[@]}"; \
	exit $$status

lint: $(INSTALLED) ## ruff, import-linter contracts, mypy (strict on the pure packages)
	@status=0; \
	echo "==> ruff"; $(BIN)/ruff check . || status=1; \
	echo "==> lint-imports"; $(BIN)/lint-imports || status=1; \
	echo "==> mypy"; $(BIN)/mypy || status=1; \
	exit $$status

# demo and bench leave the broker running so you can look around; `make kafka-stop` when done.
demo bench: export BURNWATCH_KAFKA_BOOTSTRAP_SERVERS ?= $(KAFKA_HOST):$(KAFKA_PORT)

demo: $(INSTALLED) kafka-start ## start Kafka and run the end-to-end demo (deploy/demo.sh)
	@deploy/demo.sh

bench: $(INSTALLED) kafka-start ## start Kafka and run the benchmarks (bench.run, budget_alert, detectors, feed, in_place)
	@$(BIN)/python -m bench.run
	@$(BIN)/python -m bench.budget_alert
	@$(BIN)/python -m bench.detectors
	@$(BIN)/python -m bench.feed
	@$(BIN)/python -m bench.in_place

clean: ## stop Kafka; remove its data, caches and build output
	@if [ -x $(KAFKA) ]; then $(KAFKA) stop; fi
	rm -rf .kafka .burnwatch build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis \
		.import_linter_cache deploy/kafka/lib.tmp.*
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv and the Kafka jars
	rm -rf $(VENV) deploy/kafka/lib kernel/target
