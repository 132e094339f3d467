#!/usr/bin/env bash
# Long fuzz runs, and refreshing the committed seed corpus.
#
#   scripts/fuzz-long.sh run TARGET [SECONDS] [JOBS]
#       fuzzes TARGET (default 3600 s, 1 job) starting from the committed
#       corpus; new inputs go to fuzz/corpus-local/TARGET (git-ignored), and
#       crashes to fuzz/artifacts/TARGET/. With JOBS > 1 it runs libFuzzer's
#       fork mode (-fork=JOBS -ignore_crashes=1): it keeps going after a
#       crash and collects every crashing input.
#   scripts/fuzz-long.sh minimize TARGET
#       rewrites fuzz/corpus/TARGET as the smallest set of inputs (set cover,
#       edge coverage only) from fuzz/corpus/TARGET and fuzz/corpus-local/TARGET
#       covering what they cover; crash-* inputs are kept as they are.
#
# Like scripts/ci-fuzz.sh it uses RUSTC_BOOTSTRAP=1, debug assertions, no
# sanitizer (DURQ_FUZZ_SANITIZER=address for AddressSanitizer);
# DURQ_FUZZ_FEATURES=small-groups builds with four segments per group.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
FLAGS=(--debug-assertions --sanitizer "${DURQ_FUZZ_SANITIZER:-none}")
# DURQ_FUZZ_FEATURES=small-groups: four segments per group directory (tests
# only), so that crash_run scenarios cross group boundaries.
if [[ -n "${DURQ_FUZZ_FEATURES:-}" ]]; then
    FLAGS+=(--features "$DURQ_FUZZ_FEATURES")
fi

usage() {
    sed -n '2,16p' "$0" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
t=$2
[[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "no fuzz target $t" >&2; exit 2; }
case $t in
    open_dir) max_len=8192 ;;
    *) max_len=4096 ;;
esac
mkdir -p "fuzz/corpus-local/$t" "fuzz/corpus/$t"

case $cmd in
    run)
        secs=${3:-3600}
        jobs=${4:-1}
        extra=()
        if ((jobs > 1)); then
            mkdir -p "fuzz/artifacts/$t"
            extra=(-fork="$jobs" -ignore_crashes=1 -artifact_prefix="fuzz/artifacts/$t/")
        fi
        cargo fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus-local/$t" "fuzz/corpus/$t" -- \
            -max_total_time="$secs" -max_len="$max_len" -timeout=60 -rss_limit_mb=4096 \
            -print_final_stats=1 "${extra[@]}"
        ;;
    minimize)
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/durq-cmin.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        mkdir "$tmp/in" "$tmp/out"
        # Inputs are named by their content's hash: a name found in both
        # directories is the same input, copied once.
        find "fuzz/corpus/$t" "fuzz/corpus-local/$t" -type f ! -name 'crash-*' \
            -exec cp -n -t "$tmp/in" {} \;
        cargo fuzz run "${FLAGS[@]}" "$t" "$tmp/out" "$tmp/in" -- \
            -set_cover_merge=1 -use_counters=0 -max_len="$max_len"
        out=$tmp/out
        find "fuzz/corpus/$t" -type f ! -name 'crash-*' -delete
        cp "$out"/* "fuzz/corpus/$t/"
        echo "fuzz/corpus/$t: $(find "fuzz/corpus/$t" -type f | wc -l) files," \
            "$(cat "fuzz/corpus/$t"/* | wc -c) bytes"
        ;;
    *) usage ;;
esac
