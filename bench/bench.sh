#!/bin/sh
# The whole measurement: build release, write a bench host config, start the host pinned to
# core 0, run every scenario pinned to core 1, stop the host. Results: $OUT/results.txt (human)
# and $OUT/results.jsonl (one JSON line per run).
#
#   bench/bench.sh [OUT_DIR]   (env: PORT, IDLE=5000, SECS=3, WARMUP=2, SKIP_BUILD=1, KEEP=1)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/yonexus-bench}
PORT=${PORT:-8787}
IDLE=${IDLE:-5000}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
N=$((IDLE > 1001 ? IDLE : 1001))

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p yonexus-host -p yonexus-bench \
        -p yonexus-plugin-echo -p yonexus-plugin-relay -p yonexus-plugin-broadcast
    # A second, byte-different build of the echo plugin for the hot-reload run.
    RUSTFLAGS="-C metadata=bench-alt" cargo build --release -p yonexus-plugin-echo \
        --target-dir target/bench-alt
fi

# KEEP=1 reuses $OUT (host state and cached identities: no pairing), else start clean.
[ -n "${KEEP:-}" ] && [ -f "$OUT/yonexus.toml" ] || rm -rf "$OUT"
mkdir -p "$OUT"; rm -f "$OUT/results.txt" "$OUT/results.jsonl"
./target/release/yonexus-bench config -n "$N" -p "$PORT" --dir "$OUT" > /dev/null
HOST=
start_host() {
    : > "$OUT/host.log"
    taskset -c 0 ./target/release/yonexus serve --config "$OUT/yonexus.toml" 2>> "$OUT/host.log" &
    HOST=$!
    i=0
    until grep -q listening "$OUT/host.log"; do
        i=$((i + 1)); [ $i -gt 100 ] && { cat "$OUT/host.log"; exit 1; }
        sleep 0.1
    done
    A="--url ws://127.0.0.1:$PORT/ --codes-file $OUT/codes.txt --host-pid $HOST"
}
stop_host() { kill -TERM "$HOST" 2>/dev/null; wait "$HOST" 2>/dev/null || true; }
trap stop_host EXIT INT TERM
start_host

T="--warmup $WARMUP --duration $SECS"
run() {
    echo "### yonexus-bench $*" | tee -a "$OUT/results.txt"
    taskset -c 1 ./target/release/yonexus-bench "$@" $A > "$OUT/last.txt"
    grep -v '^{' "$OUT/last.txt" | tee -a "$OUT/results.txt"
    tail -n 1 "$OUT/last.txt" >> "$OUT/results.jsonl"
}

run auth -n "$N" --pair-concurrency 64      # pairs everyone once (cached in $OUT/bench-identities)
# Memory per idle follower on a fresh host process (the allocator keeps what earlier runs freed).
stop_host; start_host
run idle -n "$IDLE" --hold 5
run auth -n "$N"                            # connect + auth only
for size in 100 1024; do
    run echo -n 50 -w 1 -s $size $T
    run echo -n 50 -w 16 -s $size $T
    run echo -n 500 -w 2 -s $size $T
    run relay -n 50 -w 1 -s $size $T
    run relay -n 50 -w 16 -s $size $T
    run relay -n 500 -w 2 -s $size $T
done
run broadcast -n 100 -w 1 $T
run broadcast -n 100 -w 16 $T
run reload -n 50 -w 16 --warmup $WARMUP --duration 5 --swaps 4 \
    --plugin-path "$OUT/plugins/libyonexus_plugin_echo.so" \
    --replacement target/bench-alt/release/libyonexus_plugin_echo.so
echo "host log: $OUT/host.log; results: $OUT/results.txt, $OUT/results.jsonl"
