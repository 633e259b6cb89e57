#!/bin/sh
# The host allowed 1 core vs 2 cores, with the same load generator: does the host use a second
# core? Every run starts a fresh host pinned with `taskset -c 0` (1 core) or `taskset -c 0,1`
# (2 cores) — the host sizes its async threads, inline-call limit and a thread-safe plugin's
# workers from the cores it may use — and drives it with `yonexus-bench echo -n N -w W` pinned
# to core 1 (in the 2-core runs the generator shares core 1 with the host).
#
# Plain echo costs the host about as little per message as it costs the generator, so on this
# 2-core machine the generator would be the limit. The rule under load is therefore the
# bench-only plugin bench/cpuwork (echo plus ROUNDS passes of FNV-1a over the 100-byte content
# per message: a rule doing real work), mapped to the `echo` rule, in three builds:
#   sharded  thread-safe (SharedPlugin), blocking: one worker thread per core, sharded by sender
#   inline   thread-safe and non-blocking: called inline on the async threads (one per core at once)
#   serial   a Plugin (&mut self): one worker thread whatever the cores
# and, for reference, the bundled echo plugin (thread-safe, non-blocking: inline).
#
#   bench/cores.sh [OUT_DIR]                              (default /tmp/yonexus-bench-cores)
#
# env: REPEAT=3  SECS=3 WARMUP=2  N=50 W=16 (followers, messages in flight each)  ROUNDS=100
#      VARIANTS="echo sharded inline serial"  QUIET=SECS QUIET_MAX=30 NICE=-10 (as bench.sh)
#      SKIP_BUILD=1 (use the builds in target/ as they are)  HOST_COMMIT=…
# Output: OUT/results.md (yonexus-bench table with the 2-core/1-core ratios), OUT/results.jsonl,
# OUT/results.txt, OUT/threads-*.txt (the host's threads per variant and core count),
# OUT/host.log (every run's host log, one after the other).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARGS="$*"
OUT=${1:-/tmp/yonexus-bench-cores}
REPEAT=${REPEAT:-3}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
N=${N:-50}
W=${W:-16}
ROUNDS=${ROUNDS:-100}
VARIANTS=${VARIANTS:-echo sharded inline serial}
BENCH=$ROOT/target/release/yonexus-bench
CPUWORK=$ROOT/target/bench-cpuwork
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

command -v taskset > /dev/null || die "taskset not found (Debian: apt-get install util-linux)"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores; nproc = $(nproc)"
set_priority

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p yonexus-host -p yonexus-bench -p yonexus-plugin-echo \
        -p yonexus-plugin-relay -p yonexus-plugin-broadcast
    for v in sharded inline serial; do
        f=; [ "$v" = sharded ] || f="--features $v"
        # shellcheck disable=SC2086 # $f is empty or one option with its value
        cargo build --release --manifest-path bench/cpuwork/Cargo.toml --target-dir "$CPUWORK" $f
        cp "$CPUWORK/release/libyonexus_bench_cpuwork.so" "$CPUWORK/libcpuwork_$v.so"
    done
fi
[ -x "$BENCH" ] && [ -x target/release/yonexus ] || die "no release build: run without SKIP_BUILD=1"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/host"
keep_results
"$BENCH" config -n "$N" -p 0 --dir "$OUT/host" > /dev/null
CONF=$OUT/host/yonexus.toml
# One config per variant: the `echo` rule goes to that variant's plugin file.
for v in $VARIANTS; do
    case $v in
        echo) cp "$CONF" "$OUT/host/echo.toml" ;;
        sharded | inline | serial)
            [ -f "$CPUWORK/libcpuwork_$v.so" ] || die "$CPUWORK/libcpuwork_$v.so missing: run without SKIP_BUILD=1"
            cp "$CPUWORK/libcpuwork_$v.so" "$OUT/host/plugins/"
            # The echo entry comes first in the config; its [plugins.config] table follows its rules.
            sed -e "s,plugins/libyonexus_plugin_echo.so,plugins/libcpuwork_$v.so," \
                -e "0,/^rules = \[\"echo\"\]/s//rules = [\"echo\"]\n[plugins.config]\nrounds = $ROUNDS/" \
                "$CONF" > "$OUT/host/$v.toml"
            ;;
        *) die "VARIANTS: unknown variant '$v' (echo, sharded, inline, serial)" ;;
    esac
    ./target/release/yonexus check --config "$OUT/host/$v.toml" > "$OUT/check-$v.txt" 2>&1 ||
        { cat "$OUT/check-$v.txt" >&2; die "the host refuses $OUT/host/$v.toml"; }
done

HOST_PID=; HOST_URL=
start_host() { # VARIANT CPUS
    stop_pid "$HOST_PID"
    echo "=== $1 on cores $2 ($(date -u +%H:%M:%S))" >> "$OUT/host.log"
    : > "$OUT/host-run.log"
    $PRIO taskset -c "$2" ./target/release/yonexus serve --config "$OUT/host/$1.toml" 2>> "$OUT/host-run.log" &
    HOST_PID=$!
    HOST_URL=ws://$(wait_listening host "$HOST_PID" "$OUT/host-run.log")/
}
stop_host() {
    stop_pid "$HOST_PID"
    HOST_PID=
    cat "$OUT/host-run.log" >> "$OUT/host.log"
}
trap 'stop_pid "$HOST_PID"; HOST_PID=' EXIT
trap 'exit 130' INT TERM

JSONL=$OUT/results.jsonl
OPTS() { echo "--url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID"; }

machine start >> "$JSONL"
ps -eo pcpu,pid,comm --sort=-pcpu | head -n 12 > "$OUT/machine-top-at-start.txt"
# Pair the followers once (not part of the table).
start_host "$(echo "$VARIANTS" | cut -d' ' -f1)" 0,1
JSONL=$OUT/pairing.jsonl
bench_run pairing "$(OPTS)" auth -n "$N"
stop_host
[ -z "$FAILED" ] || die "pairing failed:$FAILED"
JSONL=$OUT/results.jsonl

T="--warmup $WARMUP --duration $SECS"
ORDER="1 2"
r=0
while [ $r -lt "$REPEAT" ]; do
    r=$((r + 1))
    wait_quiet
    echo "## repeat $r of $REPEAT (order: $ORDER cores)" | tee -a "$OUT/results.txt"
    for v in $VARIANTS; do
        for c in $ORDER; do
            cpus=0; label=$v-1core
            [ "$c" = 2 ] && { cpus=0,1; label=$v-2cores; }
            start_host "$v" "$cpus"
            sleep 0.5
            if [ ! -f "$OUT/threads-$label.txt" ]; then
                for t in /proc/"$HOST_PID"/task/*; do cat "$t/comm"; done 2> /dev/null |
                    sed 's/-[0-9]*$//' | sort | uniq -c > "$OUT/threads-$label.txt"
            fi
            # shellcheck disable=SC2086 # $T is a list of options
            bench_run "$label" "$(OPTS)" echo -n "$N" -w "$W" -s 100 $T
            stop_host
        done
    done
    set -- $ORDER; ORDER="$2 $1"
done
machine end >> "$JSONL"

RATIOS=
for v in $VARIANTS; do RATIOS="$RATIOS --ratio $v-2cores/$v-1core"; done
{
    echo "Command: \`bench/cores.sh $ARGS\` (REPEAT=$REPEAT SECS=$SECS WARMUP=$WARMUP N=$N W=$W ROUNDS=$ROUNDS${QUIET:+ QUIET=$QUIET} NICE=$NICE); host pinned to core 0 (1 core) or cores 0,1 (2 cores), yonexus-bench to core 1."
    echo
    # shellcheck disable=SC2086 # $RATIOS is a list of options
    "$BENCH" table "$JSONL" $RATIOS
    if [ -n "$FAILED" ]; then printf '\nFailed runs:%s\n' "$FAILED"; fi
} > "$OUT/results.md"
sed "s/$ESC\[[0-9;]*m//g" "$OUT/host.log" | grep -E ' WARN | ERROR |demoted|overran' > "$OUT/host-warnings.txt" || true
echo
cat "$OUT/results.md"
echo "host warnings/errors: $(wc -l < "$OUT/host-warnings.txt") lines ($OUT/host-warnings.txt)"
[ -z "$FAILED" ] || exit 1
