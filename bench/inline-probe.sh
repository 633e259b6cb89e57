#!/bin/sh
# How much the inline path of a non-blocking plugin is worth, and when the host gives it up.
# The host calls a non-blocking, thread-safe plugin (the bundled echo) directly on its async
# threads, and demotes it to its worker threads for good once a call overruns 2 ms by running or
# blocking (time preempted does not count since main 57ddcb0; before, the budget was wall-clock
# time and under bench.sh's load the host demoted echo within seconds). Here, per repeat, on a fresh host pinned to core 0 (generator on
# core 1): echo 50×1 (label host-fresh), echo 50×16 (label host-50x16), echo 50×1 again
# (label host-after); and echo 50×1 on the Node peer (label node). Each JSON line gets
# "demoted_during": whether the host logged a demotion during that run, and "demoted_before".
#
#   bench/inline-probe.sh [OUT_DIR]                       (default /tmp/yonexus-bench-probe)
#
# env: REPEAT=3 SECS=3 WARMUP=2 QUIET NICE SKIP_BUILD HOST_COMMIT NODE_HUB (as bench.sh)
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-/tmp/yonexus-bench-probe}
REPEAT=${REPEAT:-3}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
BENCH=$ROOT/target/release/yonexus-bench
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
command -v jq > /dev/null || die "jq not found (Debian: apt-get install jq)"
find_node_hub
set_priority
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p yonexus-host -p yonexus-bench -p yonexus-plugin-echo \
        -p yonexus-plugin-relay -p yonexus-plugin-broadcast
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/host" "$OUT/node"
keep_results
mkdir -p "$OUT/node/codes"
"$BENCH" config -n 50 -p 0 --dir "$OUT/host" > /dev/null

HOST_PID=; NODE_PID=; HOST_URL=; NODE_URL=
start_host() {
    stop_pid "$HOST_PID"
    : > "$OUT/host-run.log"
    $PRIO taskset -c 0 ./target/release/yonexus serve --config "$OUT/host/yonexus.toml" 2>> "$OUT/host-run.log" &
    HOST_PID=$!
    HOST_URL=ws://$(wait_listening host "$HOST_PID" "$OUT/host-run.log")/
}
stop_host() { stop_pid "$HOST_PID"; HOST_PID=; cat "$OUT/host-run.log" >> "$OUT/host.log"; }
trap 'stop_pid "$HOST_PID"; stop_pid "$NODE_PID"' EXIT
trap 'exit 130' INT TERM
: > "$OUT/node.log"
$PRIO taskset -c 0 node "$HUB_RUN" --host 127.0.0.1 --port 0 --allow-prefix bench- \
    --code-dir "$OUT/node/codes" --state "$OUT/node/state.json" >> "$OUT/node.log" 2>&1 &
NODE_PID=$!
NODE_URL=ws://$(wait_listening node "$NODE_PID" "$OUT/node.log")/

demotions() { grep -c 'overran its call budget' "$OUT/host-run.log" || true; }
JSONL=$OUT/results.jsonl
host_run() { # LABEL ARGS…
    label=$1; shift
    before=$(demotions)
    lines=$(wc -l 2> /dev/null < "$JSONL" || echo 0)
    bench_run "$label" "--url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID" "$@"
    after=$(demotions)
    [ "$(wc -l 2> /dev/null < "$JSONL" || echo 0)" -gt "$lines" ] || return 0
    last=$(tail -n 1 "$JSONL" | jq -c --argjson b "$before" --argjson a "$after" \
        '. + {demoted_before: ($b > 0), demoted_during: ($a > $b)}')
    sed -i '$d' "$JSONL"
    echo "$last" >> "$JSONL"
}
node_run() {
    bench_run node "--url $NODE_URL --code-dir $OUT/node/codes --state-dir $OUT/node/bench-identities --host-pid $NODE_PID" "$@"
}

machine start >> "$JSONL"
start_host
JSONL=$OUT/pairing.jsonl
host_run pairing auth -n 50
node_run auth -n 50
JSONL=$OUT/results.jsonl
stop_host
T="--warmup $WARMUP --duration $SECS"
r=0
while [ $r -lt "$REPEAT" ]; do
    r=$((r + 1))
    wait_quiet
    echo "## repeat $r of $REPEAT" | tee -a "$OUT/results.txt"
    start_host
    # shellcheck disable=SC2086 # $T is a list of options
    {
        host_run host-fresh echo -n 50 -w 1 -s 100 $T
        node_run echo -n 50 -w 1 -s 100 $T
        host_run host-50x16 echo -n 50 -w 16 -s 100 $T
        host_run host-after echo -n 50 -w 1 -s 100 $T
    }
    stop_host
done
machine end >> "$JSONL"
{
    "$BENCH" table "$JSONL" --ratio host-fresh/node --ratio host-after/node --ratio host-fresh/host-after
    echo
    echo "Runs during which the host demoted echo (label: count of runs):"
    jq -r 'select(.demoted_during == true) | .label' "$JSONL" | sort | uniq -c
    echo "Runs that started with echo already demoted:"
    jq -r 'select(.demoted_before == true) | .label' "$JSONL" | sort | uniq -c
    if [ -n "$FAILED" ]; then printf '\nFailed runs:%s\n' "$FAILED"; fi
} > "$OUT/results.md"
cat "$OUT/results.md"
[ -z "$FAILED" ] || exit 1
