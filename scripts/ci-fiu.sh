#!/usr/bin/env bash
# Fault injection on the real file system with libfiu (Debian's fiu-utils):
# runs examples/fault_probe.rs under fiu-run, injects EIO into fsync and
# fdatasync and ENOSPC into pwrite, and checks with grep that durq poisons or
# fails cleanly, that nothing reported `ok` is lost, and that the log works
# again after a reopen without injection. See docs/testing.md, "Fault
# injection on the real file system".
#
# fiu intercepts libc calls through LD_PRELOAD; Rust's std calls libc's
# fdatasync, fsync and pwrite64, which fiu wraps as posix/io/sync/fdatasync,
# posix/io/sync/fsync and posix/io/rw/pwrite. Every scenario requires the
# injected error to show up in the probe's output, so the script fails if
# fiu injected nothing.
#
# Usage: scripts/ci-fiu.sh            (installs fiu-utils with apt-get if needed)
# Environment: CARGO_TARGET_DIR (as for cargo), DURQ_FIU_KEEP=1 keeps the work
# directory with the transcripts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say_step() { printf '== %s\n' "$*"; }
fail() {
    printf 'ci-fiu: FAILED: %s\n' "$*" >&2
    if [[ -n ${TRANSCRIPT:-} && -f $TRANSCRIPT ]]; then
        printf -- '--- transcript %s (last 60 lines):\n' "$TRANSCRIPT" >&2
        tail -n 60 "$TRANSCRIPT" >&2
    fi
    exit 1
}

# --- fiu-utils -------------------------------------------------------------
if ! command -v fiu-run >/dev/null || ! command -v fiu-ctrl >/dev/null; then
    say_step "installing fiu-utils"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || fail "fiu-utils missing and not root (no sudo)"
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fiu-utils >/dev/null
fi
[[ -f /usr/lib/fiu/fiu_posix_preload.so ]] || fail "fiu's POSIX preload library is missing"

# --- the probe ------------------------------------------------------------
say_step "building examples/fault_probe.rs"
cargo build --release --quiet --example fault_probe
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR = /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
PROBE_BIN=$TARGET_DIR/release/examples/fault_probe
[[ -x $PROBE_BIN ]] || fail "no probe binary at $PROBE_BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/durq-fiu.XXXXXX")
cleanup() {
    if [[ -n ${PROBE_PID:-} ]]; then kill "$PROBE_PID" 2>/dev/null || true; fi
    if [[ ${DURQ_FIU_KEEP:-0} == 1 ]]; then
        echo "ci-fiu: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- driving one interactive probe under fiu-run ---------------------------
# start DIR: starts `fault_probe interactive DIR` under fiu-run (no failure
# point enabled yet; fiu-ctrl turns them on and off by the probe's pid).
start() {
    TRANSCRIPT=$WORK/$(basename "$1").log
    : >"$TRANSCRIPT"
    coproc PROBE { exec fiu-run -x "$PROBE_BIN" interactive "$1" --segment-size 4096 2>&1; }
    PROBE_OUT=${PROBE[0]}
    PROBE_IN=${PROBE[1]}
    local line
    IFS= read -r -t 60 line <&"$PROBE_OUT" || fail "the probe did not start"
    [[ $line == pid\ * ]] || fail "unexpected first line from the probe: $line"
    PROBE_PID=${line#pid }
    collect
    expect '^open ok' "the log opens under fiu-run"
}

# collect: reads the probe's answer up to its `done` line into $LAST.
collect() {
    LAST=""
    local line
    while IFS= read -r -t 60 line <&"$PROBE_OUT"; do
        if [[ $line == done ]]; then
            return 0
        fi
        LAST+="$line"$'\n'
        printf '%s\n' "$line" >>"$TRANSCRIPT"
    done
    fail "the probe stopped answering (crashed?)"
}

# run COMMAND: sends one command to the probe and collects its answer.
run() {
    printf '> %s\n' "$*" >>"$TRANSCRIPT"
    printf '%s\n' "$*" >&"$PROBE_IN"
    collect
}

stop() {
    printf 'quit\n' >&"$PROBE_IN"
    local pid=$PROBE_PID
    PROBE_PID=""
    wait "$pid" || fail "the probe exited with status $?"
}

# fiu COMMAND: a libfiu remote-control command for the running probe.
fiu() {
    printf '# fiu-ctrl %s\n' "$1" >>"$TRANSCRIPT"
    fiu-ctrl -c "$1" "$PROBE_PID" || fail "fiu-ctrl could not reach the probe"
}

count() { grep -Ec -- "$1" <<<"$LAST" || true; }
expect() { grep -Eq -- "$1" <<<"$LAST" || fail "$2 (no line matching /$1/)"; }
expect_count() {
    local n
    n=$(count "$1")
    [[ $n -eq $2 ]] || fail "$3 (expected $2 lines matching /$1/, got $n)"
}

# check DIR: reopens DIR without injection; every record must be intact,
# every `ok` and `acked` line of the transcript must hold, appends must work.
check() {
    local out
    out=$("$PROBE_BIN" check "$1" --expect "$TRANSCRIPT") || {
        printf '%s\n' "$out" >>"$TRANSCRIPT"
        fail "check after reopen without injection failed"
    }
    printf '%s\n' "$out" >>"$TRANSCRIPT"
    grep -q '^check passed' <<<"$out" || fail "check did not pass"
    grep -q '^append-after-reopen ok' <<<"$out" || fail "no append after reopen"
    printf '   %s\n' "$(grep '^check passed' <<<"$out")"
}

EIO=5
ENOSPC=28
FDATASYNC=posix/io/sync/fdatasync
FSYNC=posix/io/sync/fsync
PWRITE=posix/io/rw/pwrite

# --- 1. EIO from fdatasync: the log poisons, stays poisoned ---------------
say_step "1. EIO from fdatasync while appending and acknowledging"
D=$WORK/eio-fdatasync
start "$D"
run append 10
expect_count '^ok ' 10 "appends before the fault"
run consumer c1
expect '^consumer ok c1' "client created"
run ack c1 3
expect_count '^acked c1 ' 3 "acks before the fault"
fiu "enable name=$FDATASYNC,failinfo=$EIO"
run append 5
expect_count '^ok ' 0 "no append succeeds while fdatasync fails"
expect_count "^err Poisoned: .*os error $EIO" 1 "the failed fdatasync poisons the append"
expect_count '^after-error err Poisoned' 3 "every later append is refused"
expect '^poisoned yes' "the log reports poisoning"
run ack c1 1
expect "^err Poisoned: .*fdatasync ack journal.*os error $EIO" "a failed journal fdatasync fails the ack"
fiu "disable name=$FDATASYNC"
run append 2
expect_count '^ok ' 0 "no retry-and-pretend: still refused with a healthy disk"
expect '^err Poisoned' "still poisoned until reopened"
run ack c1 1
expect '^err Poisoned' "the client stays poisoned too"
stop
check "$D"

# --- 2. EIO from fsync: client creation fails, a rollover poisons ---------
say_step "2. EIO from fsync (cursor files, directory syncs, rollover)"
D=$WORK/eio-fsync
start "$D"
run append 20 # past half of the segment: the spare segment is being prepared
expect_count '^ok ' 20 "appends before the fault"
sleep 0.3 # let the background spare segment finish its own fsync
fiu "enable name=$FSYNC,failinfo=$EIO"
run consumer c2
expect "^consumer err Io\\(os error $EIO\\)" "creating a client fails cleanly when fsync fails"
run poisoned
expect '^poisoned no' "a failed client creation does not poison the log"
run append 40
# The rollover renames the spare into place and fsyncs the directory: that
# fsync fails, and the log poisons (AppendFailed if the spare was not ready
# and its own fsync failed: nothing was written then).
expect_count "^err (Poisoned|AppendFailed): .*os error $EIO" 1 "the rollover's fsync error fails the append"
expect_count '^ok ' 11 "the appends that fit in the first segment succeed"
fiu "disable name=$FSYNC"
stop
check "$D"
out=$("$PROBE_BIN" consumer "$D" c2)
printf '%s\n' "$out" >>"$TRANSCRIPT"
grep -q '^consumer ok c2' <<<"$out" || fail "creating the client after the fault"
grep -q '^ok ' <<<"$out" || fail "appending after creating the client"

# --- 3. ENOSPC from pwrite: clean failures, usable once space returns -----
say_step "3. ENOSPC from pwrite (client creation, rollover, record write)"
D=$WORK/enospc
start "$D"
run append 31 # exactly fills the first 4 KiB segment (31 records of 128 bytes)
expect_count '^ok ' 31 "appends before the disk fills"
run consumer c3
expect '^consumer ok c3' "client created"
sleep 0.3 # let the background spare segment (started at half full) finish
fiu "enable name=$PWRITE,failinfo=$ENOSPC"
run consumer c4
expect "^consumer err Io\\(os error $ENOSPC\\)" "creating a client on a full disk fails cleanly"
run append 1
expect_count "^err AppendFailed: .*os error $ENOSPC" 1 "a rollover on a full disk fails cleanly"
expect '^poisoned no' "a failed segment creation does not poison the log"
fiu "disable name=$PWRITE"
run append 2
expect_count '^ok ' 2 "appends work again once space returns"
run consumer c4
expect '^consumer ok c4' "clients can be created once space returns"
run ack c3 5
expect_count '^acked c3 ' 5 "acks work once space returns"
fiu "enable name=$PWRITE,failinfo=$ENOSPC"
run append 1
expect_count "^err Poisoned: .*write to .*os error $ENOSPC" 1 "a failed record write poisons"
expect '^poisoned yes' "the log reports poisoning"
run ack c3 1
expect "^err .*os error $ENOSPC" "an ack on a full disk fails"
fiu "disable name=$PWRITE"
stop
check "$D"

# --- 4. Random faults, set by fiu-run itself ------------------------------
say_step "4. random EIO from fdatasync and ENOSPC from pwrite (fiu-run -c enable_random)"
D=$WORK/random
TRANSCRIPT=$WORK/random.log
"$PROBE_BIN" append "$D" 20 --segment-size 4096 >"$TRANSCRIPT" || fail "setup appends"
for spec in "$FDATASYNC,probability=0.05,failinfo=$EIO" "$PWRITE,probability=0.05,failinfo=$ENOSPC"; do
    LAST=$(fiu-run -x -c "enable_random name=$spec" "$PROBE_BIN" append "$D" 400 --segment-size 4096) ||
        fail "probe under enable_random $spec exited with $?"
    printf '# enable_random %s\n%s\n' "$spec" "$LAST" >>"$TRANSCRIPT"
    expect_count '^err ' 1 "a fault was injected and stopped the appends ($spec)"
    if [[ $spec == "$FDATASYNC"* ]]; then
        expect_count '^after-error ok' 0 "no append succeeds after a failed fdatasync"
        expect '^poisoned yes' "a failed fdatasync poisons"
    elif [[ $(count '^err AppendFailed') -eq 0 ]]; then
        # ENOSPC hit a record write (not a segment creation): poisoned.
        expect_count '^after-error ok' 0 "no append succeeds after a failed write"
        expect '^poisoned yes' "a failed write poisons"
    fi
    check "$D"
done

say_step "fault injection: all checks passed"
