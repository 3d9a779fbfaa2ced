#!/usr/bin/env bash
# Builds and runs hopgate's libFuzzer targets on a STABLE toolchain, without cargo-fuzz.
#
#   fuzz/run.sh build            build every target (ASan unless FUZZ_SANITIZER=none)
#   fuzz/run.sh smoke            every target for a fixed short time (<= 56 s of fuzzing in all)
#   fuzz/run.sh long [RUNS]      every target (or those in FUZZ_TARGETS) to RUNS executions
#                                (default 10,000,000); logs in target/fuzz-logs/<target>.log
#   fuzz/run.sh run TARGET [libFuzzer args...]   one target, arguments passed through
#   fuzz/run.sh seeds            regenerate fuzz/corpus/ (the committed seed corpus)
#
# Environment:
#   FUZZ_SANITIZER  address (default) | none
#   FUZZ_TARGETS    space-separated subset of: chain invocation gate hash hdp jose biscuit
#   FUZZ_FORK       long runs: libFuzzer -fork=N worker processes (default 1: one process)
#   FUZZ_MAX_TIME   long runs: also stop each target after this many seconds
#   SMOKE_SECONDS   per-target fuzzing time of `smoke` (default 8; 7 targets -> 56 s)
#
# The flags are the ones cargo-fuzz 0.13 passes (see fuzz/README.md). Stable rustc only
# takes `-Zsanitizer` with RUSTC_BOOTSTRAP=1; the runtime it links
# (librustc-stable_rt.asan.a) ships with the stable toolchain.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
all_targets=(chain invocation gate hash hdp jose biscuit)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"
sanitizer="${FUZZ_SANITIZER:-address}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
instrument="${FUZZ_INSTRUMENT:-core}"
target_dir="$root/target/fuzz/$sanitizer-$instrument"
bin_dir="$target_dir/$triple/release"
log_dir="$root/target/fuzz-logs"
artifacts="$here/artifacts"

die() {
    echo "fuzz/run.sh: $*" >&2
    exit 2
}

# The flags cargo-fuzz passes that instrument code (coverage, compare tracing, ASan).
instrument_flags() {
    local f=(
        -Cpasses=sancov-module
        -Cllvm-args=-sanitizer-coverage-level=4
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
        -Cllvm-args=-sanitizer-coverage-pc-table
        -Cllvm-args=-sanitizer-coverage-trace-compares
        -Cllvm-args=-simplifycfg-branch-fold-threshold=0
        -Cllvm-args=-sanitizer-coverage-stack-depth
    )
    case "$sanitizer" in
        address) f+=(-Zsanitizer=address) ;;
        none) ;;
        *) die "FUZZ_SANITIZER must be address or none, not '$sanitizer'" ;;
    esac
    echo "${f[*]}"
}

# The rest of cargo-fuzz's flags, for every crate.
common_flags() {
    echo "--cfg fuzzing -Clink-dead-code -Ccodegen-units=1"
}

# Crates that get instrument_flags with FUZZ_INSTRUMENT=core: hopgate's code, the
# targets and their shared module (crate names as rustc sees them).
instrumented_crates="hopgate_core hopgate_fuzz chain invocation gate hash hdp jose biscuit"

build() {
    local bins=()
    local t
    for t in "${targets[@]}"; do
        bins+=(--bin "$t")
    done
    echo "== building ${targets[*]} (sanitizer: $sanitizer) into $target_dir"
    # --target keeps RUSTFLAGS away from build scripts and proc macros (as cargo-fuzz does).
    case "$instrument" in
        all)
            RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
                RUSTFLAGS="$(instrument_flags) $(common_flags) -Cdebug-assertions -Coverflow-checks" \
                cargo build --release --manifest-path "$here/Cargo.toml" \
                --target "$triple" "${bins[@]}"
            ;;
        core)
            # Third-party crates: optimised, without debug assertions and overflow checks
            # (the profile turns them on for everything else, hopgate-core included).
            RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(common_flags)" CARGO_TARGET_DIR="$target_dir" \
                RUSTC_WRAPPER="$here/rustc-wrapper.sh" FUZZ_INSTRUMENT_FLAGS="$(instrument_flags)" \
                FUZZ_INSTRUMENT_CRATES="$instrumented_crates" \
                cargo build --release --manifest-path "$here/Cargo.toml" \
                --config 'profile.release.package."*".debug-assertions=false' \
                --config 'profile.release.package."*".overflow-checks=false' \
                --config 'profile.release.package.hopgate-core.debug-assertions=true' \
                --config 'profile.release.package.hopgate-core.overflow-checks=true' \
                --target "$triple" "${bins[@]}"
            ;;
        *) die "FUZZ_INSTRUMENT must be core or all, not '$instrument'" ;;
    esac
}

asan_env() {
    # cargo-fuzz's default, and leak reports on (the default on Linux, said explicitly).
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0:detect_leaks=1}"
}

# run_one TARGET LOG [libFuzzer flags...] CORPUS_DIR...: appends everything to LOG.
# libFuzzer writes new inputs into the first corpus directory only.
run_one() {
    local t="$1" log="$2"
    shift 2
    mkdir -p "$artifacts/$t"
    asan_env
    "$bin_dir/$t" -artifact_prefix="$artifacts/$t/" -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 "$@" >>"$log" 2>&1
}

# report TARGET LOG: the executions and speed libFuzzer reported.
report() {
    local t="$1" log="$2" runs rate secs
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    printf '%-11s %12s executions  %8s exec/s  %6s s  (%s)\n' "$t" "${runs:-?}" "${rate:-?}" "${secs:-?}" "$log"
}

# A log that shows any crash, timeout, leak or sanitizer report fails the run, even if
# libFuzzer's exit status did not.
clean_log() {
    ! grep -E -q '==[0-9]+==ERROR|^SUMMARY: |ERROR: libFuzzer|panicked at|deadly signal|Test unit written' "$1"
}

smoke() {
    local secs="${SMOKE_SECONDS:-8}" tmp t log failed=0
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    for t in "${targets[@]}"; do
        log="$tmp/$t.log"
        : >"$log"
        # A copy of the seed corpus in a temporary directory: the committed one never grows.
        cp -R "$here/corpus/$t" "$tmp/corpus-$t"
        if run_one "$t" "$log" -max_total_time="$secs" "$tmp/corpus-$t" && clean_log "$log"; then
            report "$t" "$log"
        else
            failed=1
            echo "FAIL: $t" >&2
            tail -n 60 "$log" >&2
        fi
    done
    return "$failed"
}

long() {
    local runs="${1:-10000000}" fork="${FUZZ_FORK:-1}" t log start status
    local extra=()
    if [ "$fork" -gt 1 ]; then
        extra+=(-fork="$fork" -ignore_crashes=0 -ignore_timeouts=0 -ignore_ooms=0)
    fi
    if [ -n "${FUZZ_MAX_TIME:-}" ]; then
        extra+=(-max_total_time="$FUZZ_MAX_TIME")
    fi
    mkdir -p "$log_dir"
    for t in "${targets[@]}"; do
        log="$log_dir/$t.log"
        : >"$log"
        echo "== $t: $runs runs (sanitizer $sanitizer, fork $fork), log $log"
        start=$SECONDS
        status=0
        mkdir -p "$root/target/fuzz/corpus/$t"
        run_one "$t" "$log" -runs="$runs" "${extra[@]}" "$root/target/fuzz/corpus/$t" "$here/corpus/$t" ||
            status=$?
        echo "wall: $((SECONDS - start)) s, exit status $status" >>"$log"
        report "$t" "$log"
        echo "   wall $((SECONDS - start)) s, exit status $status"
        if [ "$status" -ne 0 ] || ! clean_log "$log"; then
            echo "FAIL: $t (see $log; reproducer in $artifacts/$t/)" >&2
            return 1
        fi
    done
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    build) build ;;
    smoke)
        build
        smoke
        ;;
    long)
        build
        long "$@"
        ;;
    run)
        [ $# -ge 1 ] || die "usage: run.sh run TARGET [libFuzzer args...]"
        t="$1"
        shift
        targets=("$t")
        build
        mkdir -p "$root/target/fuzz/corpus/$t" "$artifacts/$t"
        asan_env
        exec "$bin_dir/$t" -artifact_prefix="$artifacts/$t/" "$@"
        ;;
    seeds)
        cargo run --release --manifest-path "$here/Cargo.toml" \
            --target-dir "$root/target/fuzz/seeds" --example seed_corpus -- "$here/corpus"
        ;;
    *) die "usage: run.sh build | smoke | long [RUNS] | run TARGET [args...] | seeds" ;;
esac
