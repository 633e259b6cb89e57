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
NICE=${NICE:--10}

die() { echo "bench.sh: $*" >&2; exit 1; }
has() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- preflight: tools, the Node peer and its dependencies ----
command -v taskset > /dev/null || die "taskset not found (Debian: apt-get install util-linux)"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on core 0, load generator on core 1); nproc = $(nproc)"
if has node; then
    command -v node > /dev/null ||
        die "node not found: install Node.js >= 20 (Debian: apt-get install nodejs) or run with ONLY=host"
    command -v npm > /dev/null ||
        die "npm not found: install it (Debian: apt-get install npm) or run with ONLY=host"
    if [ -z "${NODE_HUB:-}" ]; then
        for d in .. ../.. ../../..; do
            if [ -f "$ROOT/$d/shared/peers/node-hub/hub.mjs" ]; then
                NODE_HUB=$(cd "$ROOT/$d/shared/peers/node-hub" && pwd)/hub.mjs
                break
            fi
        done
        [ -n "${NODE_HUB:-}" ] ||
            die "the Node peer hub was not found at ../shared/peers/node-hub/hub.mjs: set NODE_HUB=/path/to/hub.mjs"
    fi
    [ -f "$NODE_HUB" ] || die "NODE_HUB=$NODE_HUB: no such file"
    HUB_SRC=$(cd "$(dirname "$NODE_HUB")" && pwd)
    if [ -d "$HUB_SRC/node_modules/ws" ]; then
        HUB_RUN=$NODE_HUB
    else
        # Install the hub's dependencies into a copy under target/, not into the shared directory.
        HUB_DIR=$ROOT/target/node-hub
        mkdir -p "$HUB_DIR"
        cp "$NODE_HUB" "$HUB_DIR/hub.mjs"
        [ -f "$HUB_SRC/package.json" ] || die "$HUB_SRC/package.json missing: cannot install the hub's dependencies"
        [ -f "$HUB_SRC/package-lock.json" ] || die "$HUB_SRC/package-lock.json missing: npm ci needs it"
        if [ ! -d "$HUB_DIR/node_modules/ws" ] || ! cmp -s "$HUB_SRC/package-lock.json" "$HUB_DIR/package-lock.json"; then
            cp "$HUB_SRC/package.json" "$HUB_SRC/package-lock.json" "$HUB_DIR/"
            echo "bench.sh: installing the Node hub's dependencies (npm ci in $HUB_DIR)" >&2
            (cd "$HUB_DIR" && npm ci --silent --no-audit --no-fund) ||
                die "npm ci failed in $HUB_DIR (is the npm registry reachable?)"
        fi
        HUB_RUN=$HUB_DIR/hub.mjs
    fi
fi

# Raised priority for servers and generator (root only; otherwise they run at the normal one).
if [ "$NICE" != 0 ] && [ "$(nice -n "$NICE" nice 2> /dev/null)" != "$NICE" ]; then
    echo "bench.sh: cannot run at niceness $NICE (not root?): running at normal priority" >&2
    NICE=0
fi
PRIO="nice -n $NICE"

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
# Keep an earlier run's results (renamed with their time) instead of overwriting them.
for f in results.txt results.jsonl results.md pairing.jsonl; do
    if [ -f "$OUT/$f" ]; then
        mv "$OUT/$f" "$OUT/${f%.*}-$(date -r "$OUT/$f" +%Y%m%dT%H%M%S).${f##*.}"
    fi
done
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
ESC=$(printf '\033')
# The address a server logged ("listening address=IP:PORT" / "listening on ws://IP:PORT").
bound_addr() {
    sed "s/$ESC\[[0-9;]*m//g" "$1" | grep -v admin | grep listening |
        grep -o '\(address=\|ws://\)[0-9.]*:[0-9]*' | head -n 1 | sed 's/^address=//; s,^ws://,,'
}
wait_listening() { # NAME PID LOG
    i=0
    while :; do
        addr=$(bound_addr "$3")
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        kill -0 "$2" 2> /dev/null || { cat "$3" >&2; die "$1 exited before listening (log above, $3)"; }
        i=$((i + 1))
        [ $i -gt 200 ] && { cat "$3" >&2; die "$1 did not log a listening address within 20 s ($3)"; }
        sleep 0.1
    done
}
stop_pid() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2> /dev/null || return 0
    i=0
    while kill -0 "$1" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2> /dev/null || true
    wait "$1" 2> /dev/null || true
}
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

machine() { # WHEN: one JSON line describing the machine now
    model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1 | sed 's/["\\]//g')
    printf '{"scenario":"machine","when":"%s","date":"%s","nproc":%s,"model":"%s","kernel":"%s","loadavg":"%s","host_commit":"%s","node":"%s"}\n' \
        "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$model" "$(uname -r)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "${HOST_COMMIT:-$(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- host protocol plugins 2> /dev/null || echo -dirty)}" \
        "$(node --version 2> /dev/null || echo none)"
}

# Busy and total jiffies of all CPUs (/proc/stat: user nice system idle iowait irq softirq steal).
cpu_jiffies() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat; }
wait_quiet() {
    [ -n "${QUIET:-}" ] || return 0
    deadline=$(($(date +%s) + QUIET))
    while :; do
        set -- $(cpu_jiffies); b0=$1; t0=$2
        sleep 2
        set -- $(cpu_jiffies)
        busy=$((($1 - b0) * 100 * $(nproc) / ($2 - t0 + 1))) # percent of one core
        if [ "$busy" -le "${QUIET_MAX:-30}" ]; then
            echo "machine quiet: other processes ${busy}% of a core" | tee -a "$OUT/results.txt"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "machine still busy after ${QUIET}s (other processes ${busy}% of a core): measuring anyway" |
                tee -a "$OUT/results.txt"
            return 0
        fi
    done
}

FAILED=
JSONL=$OUT/results.jsonl
# run LABEL SCENARIO ARGS…: one yonexus-bench run against one server, pinned to core 1; its
# JSON line goes to $JSONL.
run() {
    label=$1; shift
    case $label in
        host) A="--label host --url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID" ;;
        node) A="--label node --url $NODE_URL --code-dir $OUT/node/codes --state-dir $OUT/node/bench-identities --host-pid $NODE_PID" ;;
    esac
    echo "### [$label] yonexus-bench $*" | tee -a "$OUT/results.txt"
    # shellcheck disable=SC2086 # $A is a list of options
    if $PRIO taskset -c 1 "$BENCH" "$@" $A > "$OUT/last.txt" 2> "$OUT/last.err"; then
        cat "$OUT/last.err" "$OUT/last.txt" | grep -v '^{' | tee -a "$OUT/results.txt"
        tail -n 1 "$OUT/last.txt" >> "$JSONL"
    else
        cat "$OUT/last.err" | tee -a "$OUT/results.txt" >&2
        echo "bench.sh: [$label] $* FAILED (see above)" | tee -a "$OUT/results.txt" >&2
        FAILED="$FAILED
- [$label] yonexus-bench $*: $(tail -n 1 "$OUT/last.err")"
    fi
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
