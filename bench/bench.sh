#!/bin/sh
# The whole measurement, side by side: the Yonexus host and the Node.js peer hub
# (../shared/peers/node-hub/hub.mjs, what a Yonexus user runs today) in the same run, driven by the
# same load generator with the same scenarios. Each server is pinned to core 0, the generator to
# core 1, and the runs of the two servers alternate, so both see the same machine. Prints one
# table (per scenario: msgs/s, msgs per server CPU-second, host/Node ratio, p50/p99, the issue-10
# goal, met/missed) and writes it to OUT/results.md; raw JSON lines in OUT/results.jsonl, the
# human output in OUT/results.txt, server logs in OUT/host.log and OUT/node.log.
#
#   bench/bench.sh [OUT_DIR]                              (default /tmp/yonexus-bench)
#
# env: NODE_HUB=path/to/hub.mjs (default: shared/peers/node-hub/hub.mjs in a parent directory)
#      REPEAT=3 (runs of each scenario per server; the table shows the median run)
#      SECS=3 WARMUP=2 (measured / warm-up seconds)  AUTH=2000  IDLE=5000 (followers)
#      ONLY=host|node (one side only)  EXTRA=1 (also 1 KiB sizes, and the host's hot-reload run)
#      NICE=-10 (niceness of both servers and the generator: on a machine shared with compile
#      jobs a raised priority keeps them from being preempted mid-run; NICE=0 to disable)
#      QUIET=SECS (before the idle run and each repeat, wait up to SECS for the other processes
#      to use at most QUIET_MAX=30 % of a core; the machine is shared)
#      HOST_COMMIT=… (recorded instead of `git rev-parse HEAD`, for a tree that is not a checkout)
#      SKIP_BUILD=1 (use target/release as is)  KEEP=1 (reuse OUT's server state and cached
#      identities: no pairing; an earlier run's results in OUT are kept, renamed with their time)
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARGS="$*"
OUT=${1:-/tmp/yonexus-bench}
REPEAT=${REPEAT:-3}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
AUTH=${AUTH:-2000}
IDLE=${IDLE:-5000}
SERVERS=${ONLY:-host node}
N=$AUTH; [ "$IDLE" -gt "$N" ] && N=$IDLE; [ "$N" -lt 1001 ] && N=1001
BENCH=$ROOT/target/release/yonexus-bench

has() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---- preflight: tools, the Node peer and its dependencies ----
command -v taskset > /dev/null || die "taskset not found (Debian: apt-get install util-linux)"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on core 0, load generator on core 1); nproc = $(nproc)"
if has node; then find_node_hub; fi

set_priority

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p yonexus-host -p yonexus-bench \
        -p yonexus-plugin-echo -p yonexus-plugin-relay -p yonexus-plugin-broadcast
    if [ -n "${EXTRA:-}" ]; then
        # A second, byte-different build of the echo plugin for the hot-reload run.
        RUSTFLAGS="-C metadata=bench-alt" cargo build --release -p yonexus-plugin-echo \
            --target-dir target/bench-alt
    fi
fi
[ -x "$BENCH" ] && [ -x target/release/yonexus ] || die "no release build: run without SKIP_BUILD=1"

# ---- output directory: KEEP=1 reuses server state and cached identities ----
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -n "${KEEP:-}" ] || rm -rf "$OUT/host" "$OUT/node"
keep_results
mkdir -p "$OUT/host" "$OUT/node/codes"
"$BENCH" config -n "$N" -p 0 --dir "$OUT/host" > /dev/null
# Older hosts refuse [limits] keys they do not know: fall back to the keys they have.
if ! ./target/release/yonexus check --config "$OUT/host/yonexus.toml" > "$OUT/check.txt" 2>&1; then
    grep -q 'unknown field' "$OUT/check.txt" || { cat "$OUT/check.txt" >&2; die "the host refuses the bench config"; }
    "$BENCH" config -n "$N" -p 0 --dir "$OUT/host" --compat-limits > /dev/null
    ./target/release/yonexus check --config "$OUT/host/yonexus.toml" > "$OUT/check.txt" 2>&1 ||
        { cat "$OUT/check.txt" >&2; die "the host refuses the bench config (also with --compat-limits)"; }
fi

# ---- servers: port 0, the bound address read back from the log; stopped on exit ----
HOST_PID=; NODE_PID=; HOST_URL=; NODE_URL=
start_host() {
    stop_pid "$HOST_PID"
    : > "$OUT/host.log"
    $PRIO taskset -c 0 ./target/release/yonexus serve --config "$OUT/host/yonexus.toml" 2>> "$OUT/host.log" &
    HOST_PID=$!
    HOST_URL=ws://$(wait_listening host "$HOST_PID" "$OUT/host.log")/
}
start_node() {
    stop_pid "$NODE_PID"
    : > "$OUT/node.log"
    # --allow-prefix bench- admits every bench identity (bench-0 … bench-N; ids up to 256 chars).
    $PRIO taskset -c 0 node "$HUB_RUN" --host 127.0.0.1 --port 0 --allow-prefix bench- \
        --code-dir "$OUT/node/codes" --state "$OUT/node/state.json" >> "$OUT/node.log" 2>&1 &
    NODE_PID=$!
    NODE_URL=ws://$(wait_listening node "$NODE_PID" "$OUT/node.log")/
}
start_servers() { if has host; then start_host; fi; if has node; then start_node; fi; }
cleanup() { stop_pid "$HOST_PID"; stop_pid "$NODE_PID"; HOST_PID=; NODE_PID=; }
trap cleanup EXIT
trap 'exit 130' INT TERM

JSONL=$OUT/results.jsonl
# run LABEL SCENARIO ARGS…: one yonexus-bench run against one server, pinned to core 1.
run() {
    label=$1; shift
    case $label in
        host) A="--url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID" ;;
        node) A="--url $NODE_URL --code-dir $OUT/node/codes --state-dir $OUT/node/bench-identities --host-pid $NODE_PID" ;;
    esac
    bench_run "$label" "$A" "$@"
}
# both SCENARIO ARGS…: the same run against each server; ORDER alternates who goes first.
ORDER=$SERVERS
both() { for s in $ORDER; do run "$s" "$@"; done; }
flip() { set -- $ORDER; if [ $# -eq 2 ]; then ORDER="$2 $1"; fi; }

machine start >> "$OUT/results.jsonl"
ps -eo pcpu,pid,comm --sort=-pcpu | head -n 12 > "$OUT/machine-top-at-start.txt"
start_servers
# Pair every identity once (cached in OUT/*/bench-identities); not part of the table.
JSONL=$OUT/pairing.jsonl
both auth -n "$N" --pair-concurrency 64
[ -z "$FAILED" ] || die "pairing failed:$FAILED"
JSONL=$OUT/results.jsonl

# Memory per idle follower on fresh server processes (allocators keep what earlier runs freed).
start_servers
wait_quiet
both idle -n "$IDLE" --hold 5
flip

T="--warmup $WARMUP --duration $SECS"
r=0
while [ $r -lt "$REPEAT" ]; do
    r=$((r + 1))
    wait_quiet
    echo "## repeat $r of $REPEAT (order: $ORDER)" | tee -a "$OUT/results.txt"
    both auth -n "$AUTH"
    # shellcheck disable=SC2086 # $T is a list of options
    for size in 100 ${EXTRA:+1024}; do
        both echo -n 50 -w 16 -s $size $T
        both echo -n 50 -w 1 -s $size $T
        both echo -n 500 -w 2 -s $size $T
        both relay -n 50 -w 1 -s $size $T
        both relay -n 50 -w 16 -s $size $T
        both relay -n 500 -w 2 -s $size $T
    done
    both broadcast -n 100 -w 1 $T
    both broadcast -n 100 -w 16 $T
    flip
done
if [ -n "${EXTRA:-}" ] && has host; then # the Node peer has no hot reload
    run host reload -n 50 -w 16 --warmup "$WARMUP" --duration 5 --swaps 4 \
        --plugin-path "$OUT/host/plugins/libyonexus_plugin_echo.so" \
        --replacement target/bench-alt/release/libyonexus_plugin_echo.so
fi
machine end >> "$OUT/results.jsonl"
cleanup

{
    echo "Command: \`${BENCH_CMD:-bench/bench.sh $ARGS}\` (REPEAT=$REPEAT SECS=$SECS WARMUP=$WARMUP AUTH=$AUTH IDLE=$IDLE${EXTRA:+ EXTRA=1}${QUIET:+ QUIET=$QUIET} NICE=$NICE); servers pinned to core 0, yonexus-bench to core 1; median of $REPEAT runs per server."
    echo
    "$BENCH" compare "$OUT/results.jsonl"
    if [ -n "$FAILED" ]; then printf '\nFailed runs:%s\n' "$FAILED"; fi
} > "$OUT/results.md"
echo
cat "$OUT/results.md"
echo "results: $OUT/results.md, $OUT/results.jsonl, $OUT/results.txt; logs: $OUT/host.log, $OUT/node.log"
[ -z "$FAILED" ] || exit 1
