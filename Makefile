# hopgate: every task from a fresh machine that has Rust and Python 3.9+.
#   make demo   builds a release build in .venv and runs the demo workload
#   make test   builds, then runs cargo test (core) and pytest (bindings, reference, differential)
#   make bench  benchmarks against the reference and peers (PyNaCl, cryptography, biscuit-python)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-stamp
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: all venv build test test-rust test-python typecheck demo bench clean

all: test

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP)

# Release build (lto, overflow checks on) installed into the virtualenv.
build: $(STAMP)
	$(VENV)/bin/maturin develop --release --quiet --extras reference

test-rust:
	cargo test --locked -p hopgate-core

test-python: build
	$(PY) -m pytest -q tests

typecheck: build
	$(PY) -m mypy
	$(PY) -m mypy.stubtest hopgate._native

test: test-rust test-python typecheck

demo: build
	$(PY) -m hopgate.demo

bench: build
	mkdir -p target/bench
	$(PY) bench/peers.py --json target/bench/peers.json --png target/bench/peers.png
	$(PY) -m pytest -q bench --benchmark-only --benchmark-columns=min,median,ops --benchmark-sort=name

clean:
	rm -rf $(VENV) target
