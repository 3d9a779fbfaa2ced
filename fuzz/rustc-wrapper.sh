#!/usr/bin/env bash
# RUSTC_WRAPPER used by fuzz/run.sh when FUZZ_INSTRUMENT=core: adds the coverage and
# sanitizer flags ($FUZZ_INSTRUMENT_FLAGS) only to the crates named in
# $FUZZ_INSTRUMENT_CRATES, and only when compiling for the target (cargo passes
# --target then; build scripts and proc macros are compiled without it).
set -euo pipefail
rustc="$1"
shift
name=""
for_target=0
prev=""
for a in "$@"; do
    case "$prev" in
        --crate-name) name="$a" ;;
        --target) for_target=1 ;;
    esac
    prev="$a"
done
if [ "$for_target" = 1 ] && [[ " ${FUZZ_INSTRUMENT_CRATES:-} " == *" $name "* ]]; then
    read -r -a extra <<<"${FUZZ_INSTRUMENT_FLAGS:-}"
    exec "$rustc" "$@" "${extra[@]}"
fi
exec "$rustc" "$@"
