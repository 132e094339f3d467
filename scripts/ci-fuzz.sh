#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a short bounded time, starting from its
# committed corpus (fuzz/corpus/TARGET/, read only: new inputs go to a
# temporary directory). Exits non-zero if any target crashed; the crashing
# input is left in fuzz/artifacts/TARGET/ and the command that replays it is
# printed. See docs/testing.md, "Fuzzing".
#
# cargo-fuzz needs nightly-only compiler flags (-Z sanitizer, -C passes=
# sancov-module, ...). The machine has only the stable toolchain, so the
# script sets RUSTC_BOOTSTRAP=1, which lets stable rustc accept them.
#
# Environment:
#   DURQ_FUZZ_SECONDS    seconds per target (default 30)
#   DURQ_FUZZ_TARGETS    targets to run (default: all of fuzz/fuzz_targets/)
#   DURQ_FUZZ_SANITIZER  none (default) or address
#   DURQ_FUZZ_KEEP=1     keep the new corpus entries (printed directory)
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${DURQ_FUZZ_SECONDS:-30}
SANITIZER=${DURQ_FUZZ_SANITIZER:-none}
if [[ -n ${DURQ_FUZZ_TARGETS:-} ]]; then
    read -r -a TARGETS <<<"$DURQ_FUZZ_TARGETS"
else
    TARGETS=()
    for f in fuzz/fuzz_targets/*.rs; do
        TARGETS+=("$(basename "$f" .rs)")
    done
fi

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    echo "== installing a C++ compiler (for libFuzzer)"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

export RUSTC_BOOTSTRAP=1
# The fuzz crate builds with its own flags into fuzz/target; a
# CARGO_TARGET_DIR meant for the main crate would only mix the two.
unset CARGO_TARGET_DIR
# Debug assertions (and so integer overflow checks) on, as in `cargo test`.
FUZZ_FLAGS=(--debug-assertions --sanitizer "$SANITIZER")

echo "== building fuzz targets (${TARGETS[*]})"
cargo fuzz build "${FUZZ_FLAGS[@]}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/durq-fuzz.XXXXXX")
if [[ ${DURQ_FUZZ_KEEP:-0} != 1 ]]; then
    trap 'rm -rf "$WORK"' EXIT
fi

failed=()
for t in "${TARGETS[@]}"; do
    case $t in
        open_dir) max_len=8192 ;;
        *) max_len=4096 ;;
    esac
    mkdir -p "$WORK/$t" "fuzz/corpus/$t"
    echo "== fuzzing $t for ${SECS}s (corpus: $(find "fuzz/corpus/$t" -type f | wc -l) files)"
    log=$WORK/$t.log
    if cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$WORK/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -max_len="$max_len" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    else
        failed+=("$t")
        echo "!! $t crashed:"
        grep -E -A12 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | grep -vE '^ +at ' | head -40 || tail -40 "$log"
        artifact=$(grep -oE "fuzz/artifacts/$t/[a-z]+-[0-9a-f]+" "$log" | head -1 || true)
        if [[ -n $artifact ]]; then
            echo "   input: $artifact"
            echo "   replay: DURQ_FUZZ_TARGET=$t DURQ_FUZZ_INPUT=$artifact cargo test --test fuzz_corpus replay_one -- --nocapture"
            echo "   keep it as a regression: cp $artifact fuzz/corpus/$t/"
        fi
    fi
done

if [[ ${DURQ_FUZZ_KEEP:-0} == 1 ]]; then
    echo "new corpus entries kept in $WORK"
fi
if ((${#failed[@]})); then
    echo "ci-fuzz: crashes in: ${failed[*]}"
    exit 1
fi
echo "ci-fuzz: no crash in ${#TARGETS[@]} targets (${SECS}s each)"
