#!/usr/bin/env bash
# Differential atheris fuzzing of hopgate's Python API (native vs hopgate.reference).
#
#   fuzz/python/run.sh smoke              ~15 s, exits non-zero on any finding (CI)
#   fuzz/python/run.sh long [RUNS]        -runs=RUNS (default 200000), stops at the first finding
#   fuzz/python/run.sh collect [SECONDS]  collect mode for SECONDS (default 600): every distinct
#                                         native/reference disagreement goes to
#                                         $HOPGATE_FUZZ_OUT (default ./fuzz-findings.jsonl)
#
# The seed corpus (fuzz/python/corpus/) is copied to a temporary directory, so runs never
# grow the committed corpus. Crash inputs are kept in $HOPGATE_FUZZ_ARTIFACTS (default: a
# new temporary directory, printed at the end if anything was written there); replay one
# with: $PY fuzz/python/fuzz_api.py --describe CRASH_FILE
# Extra arguments after the mode's own go to libFuzzer (e.g. -seed=1 -max_len=2048).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PY="${PY:-$root/.venv/bin/python}"
mode="${1:-smoke}"
if [ "$#" -gt 0 ]; then shift; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/hopgate-fuzz.XXXXXX")"
artifacts="${HOPGATE_FUZZ_ARTIFACTS:-$(mktemp -d "${TMPDIR:-/tmp}/hopgate-fuzz-artifacts.XXXXXX")}"
mkdir -p "$artifacts"
cleanup() {
    rm -rf "$work"
    if [ -z "$(ls -A "$artifacts")" ]; then
        [ -n "${HOPGATE_FUZZ_ARTIFACTS:-}" ] || rmdir "$artifacts"
    else
        echo "fuzz: crash inputs in $artifacts (replay: $PY $here/fuzz_api.py --describe FILE)" >&2
    fi
}
trap cleanup EXIT
mkdir "$work/corpus"
cp "$here"/corpus/* "$work/corpus/"

common=(-timeout=60 -max_len=1024 -print_final_stats=1 "-artifact_prefix=$artifacts/")

case "$mode" in
    smoke)
        "$PY" "$here/fuzz_api.py" "${common[@]}" -max_total_time=15 "$@" "$work/corpus"
        ;;
    long)
        runs="${1:-200000}"
        if [ "$#" -gt 0 ]; then shift; fi
        "$PY" "$here/fuzz_api.py" "${common[@]}" "-runs=$runs" "$@" "$work/corpus"
        ;;
    collect)
        seconds="${1:-600}"
        if [ "$#" -gt 0 ]; then shift; fi
        out="${HOPGATE_FUZZ_OUT:-$PWD/fuzz-findings.jsonl}"
        HOPGATE_FUZZ_COLLECT=1 HOPGATE_FUZZ_OUT="$out" \
            "$PY" "$here/fuzz_api.py" "${common[@]}" "-max_total_time=$seconds" "$@" "$work/corpus"
        if [ -f "$out" ]; then
            "$PY" "$here/fuzz_api.py" --summary "$out" 2>/dev/null
            echo "fuzz: findings in $out" >&2
        else
            echo "fuzz: no findings" >&2
        fi
        ;;
    *)
        echo "usage: $0 smoke | long [RUNS] | collect [SECONDS]  [libFuzzer flags...]" >&2
        exit 2
        ;;
esac
