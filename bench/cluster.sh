#!/bin/sh
# Cross-host relay and broadcast (issue 11): two `yonexus` hosts as one cluster — a private
# PostgreSQL (initdb in a temporary directory, 127.0.0.1, an ephemeral port; as the `postgres`
# or `nobody` account when run as root, which PostgreSQL refuses) and a private `nats-server`
# (127.0.0.1, a random port) — against, in the same run, relay on one host of the cluster, a
# standalone host (file store) and the Node peer hub.
#
# Every server process (hosts A and B, nats-server, PostgreSQL, the standalone host, the Node
# hub) is pinned to core 0, the load generator to core 1, as in bench.sh: the figure that
# carries over to other machines is msgs per server CPU-second, where "server" is everything
# the cluster runs (A + B + nats-server, measured over the window; PostgreSQL, which the
# message path does not touch, is measured over each whole run and reported on its own).
#
# Labels (yonexus-bench table):
#   cross      senders on host A, receivers on host B (--url A --recv-url B): every message
#              goes A → NATS → B; CPU of A + B + nats-server
#   cluster-a  senders and receivers on host A of the same cluster (local delivery; a
#              broadcast is still published to NATS for B); CPU of A + B + nats-server
#   host       a standalone host (file store, no cluster); its CPU
#   node       the Node peer hub; its CPU
# Scenarios: relay 50 pairs ×1 and ×16, broadcast 1→100 ×1 and ×16, 100 B.
#
#   bench/cluster.sh [OUT_DIR]                            (default /tmp/yonexus-bench-cluster)
#
# env: REPEAT=3 SECS=3 WARMUP=2  QUIET=SECS QUIET_MAX=30 NICE=-10 (as bench.sh)
#      LABELS="cross cluster-a host node"  SKIP_BUILD=1  HOST_COMMIT=…  NODE_HUB=…
#      YONEXUS_PG_BINDIR (initdb, postgres)  YONEXUS_NATS_SERVER (as the test suite)
# Output: OUT/results.md, OUT/results.jsonl (each run's line has "postgres_cpu_pct" added),
# OUT/results.txt, logs OUT/{a,b,host}.log, OUT/nats.log, OUT/postgres.log, OUT/node.log.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARGS="$*"
OUT=${1:-/tmp/yonexus-bench-cluster}
REPEAT=${REPEAT:-3}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
LABELS=${LABELS:-cross cluster-a host node}
N=202 # relay 50 pairs = 100 followers; broadcast 1 + 100
BENCH=$ROOT/target/release/yonexus-bench
YONEXUS=$ROOT/target/release/yonexus
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
has() { case " $LABELS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- preflight ----
command -v taskset > /dev/null || die "taskset not found (Debian: apt-get install util-linux)"
command -v jq > /dev/null || die "jq not found (Debian: apt-get install jq)"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores; nproc = $(nproc)"
PG_BIN=${YONEXUS_PG_BINDIR:-}
if [ -z "$PG_BIN" ]; then
    for d in $(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -t/ -k4 -rn) $(echo "$PATH" | tr : ' '); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then PG_BIN=$d; break; fi
    done
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
    die "PostgreSQL's initdb/postgres not found (Debian: apt-get install postgresql, or set YONEXUS_PG_BINDIR)"
command -v psql > /dev/null || die "psql not found (Debian: apt-get install postgresql-client)"
NATS_BIN=${YONEXUS_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[ -x "$NATS_BIN" ] || die "nats-server not found (Debian: apt-get install nats-server, or set YONEXUS_NATS_SERVER)"
if has node; then find_node_hub; fi
set_priority

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p yonexus-host -p yonexus-bench -p yonexus-plugin-echo \
        -p yonexus-plugin-relay -p yonexus-plugin-broadcast
fi
[ -x "$BENCH" ] && [ -x "$YONEXUS" ] || die "no release build: run without SKIP_BUILD=1"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/a" "$OUT/b" "$OUT/host" "$OUT/node" "$OUT/cluster-identities"
keep_results

# ---- everything we start is stopped on exit, and the database directory removed ----
A_PID=; B_PID=; HOST_PID=; NODE_PID=; NATS_PID=; PG_PID=; PG_MASTER=; PGDIR=
cleanup() {
    for p in "$A_PID" "$B_PID" "$HOST_PID" "$NODE_PID" "$NATS_PID"; do stop_pid "$p"; done
    if [ -n "$PG_MASTER" ]; then
        kill -INT "$PG_MASTER" 2> /dev/null || true # fast shutdown
        i=0
        while kill -0 "$PG_MASTER" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$PG_MASTER" 2> /dev/null || true
    fi
    stop_pid "$PG_PID"
    A_PID=; B_PID=; HOST_PID=; NODE_PID=; NATS_PID=; PG_PID=; PG_MASTER=
    [ -z "$PGDIR" ] || rm -rf "$PGDIR"
    PGDIR=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random_port() { echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000)); }

# ---- PostgreSQL: initdb in a temporary directory, as an unprivileged account when root ----
RUN_AS=
if [ "$(id -u)" = 0 ]; then
    for u in postgres nobody; do
        if id "$u" > /dev/null 2>&1; then RUN_AS=$u; break; fi
    done
    [ -n "$RUN_AS" ] || die "running as root and PostgreSQL refuses root: create a 'postgres' account"
fi
PGU=; [ -z "$RUN_AS" ] || PGU="runuser -u $RUN_AS --"
as_pg() { $PGU "$@"; }
PGDIR=$(mktemp -d /tmp/yonexus-bench-pg.XXXXXX)
mkdir "$PGDIR/s"
PG_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && echo "$PG_PASSWORD" > "$PGDIR/pw")
[ -z "$RUN_AS" ] || chown -R "$RUN_AS" "$PGDIR"
as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U yonexus --pwfile "$PGDIR/pw" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync > "$OUT/initdb.log" 2>&1 ||
    { cat "$OUT/initdb.log" >&2; die "initdb failed"; }
rm -f "$PGDIR/pw"
attempt=0
while :; do
    PG_PORT=$(random_port)
    : > "$OUT/postgres.log"
    # Same settings as the test suite (tests/src/services.rs): fsync off (a private, throwaway
    # database; commits stay synchronous).
    # shellcheck disable=SC2086 # $PGU is empty or a command prefix
    $PRIO taskset -c 0 $PGU "$PG_BIN/postgres" -D "$PGDIR/data" \
        -p "$PG_PORT" -h 127.0.0.1 -k "$PGDIR/s" -c fsync=off -c shared_buffers=32MB \
        -c max_connections=200 -c lc_messages=C >> "$OUT/postgres.log" 2>&1 &
    PG_PID=$!
    i=0
    while ! grep -q "ready to accept connections" "$OUT/postgres.log" && kill -0 "$PG_PID" 2> /dev/null && [ $i -lt 300 ]; do
        sleep 0.1; i=$((i + 1))
    done
    grep -q "ready to accept connections" "$OUT/postgres.log" && break
    stop_pid "$PG_PID"; PG_PID=
    attempt=$((attempt + 1))
    [ $attempt -lt 5 ] || { cat "$OUT/postgres.log" >&2; die "PostgreSQL did not start"; }
done
# runuser keeps the postmaster as its child: measure and stop the postmaster itself.
PG_MASTER=$(head -n 1 "$PGDIR/data/postmaster.pid")
as_pg psql -h "$PGDIR/s" -p "$PG_PORT" -U yonexus -d postgres -qc "CREATE DATABASE yonexus OWNER yonexus" > /dev/null
# The URL holds the password: only in the hosts' environment, never in a file or a log.
PG_URL="postgres://yonexus:$PG_PASSWORD@127.0.0.1:$PG_PORT/yonexus"

# ---- nats-server on a random port ----
: > "$OUT/nats.log"
$PRIO taskset -c 0 "$NATS_BIN" -a 127.0.0.1 -p -1 -n yonexus-bench >> "$OUT/nats.log" 2>&1 &
NATS_PID=$!
i=0
while ! grep -q "Server is ready" "$OUT/nats.log"; do
    kill -0 "$NATS_PID" 2> /dev/null || { cat "$OUT/nats.log" >&2; die "nats-server exited"; }
    i=$((i + 1)); [ $i -lt 100 ] || die "nats-server not ready in 10 s ($OUT/nats.log)"
    sleep 0.1
done
NATS_URL=nats://$(grep -o 'client connections on [0-9.]*:[0-9]*' "$OUT/nats.log" | head -n 1 | sed 's/.* on //')

# ---- host configs: A and B (cluster), and a standalone host ----
for h in a b host; do "$BENCH" config -n "$N" -p 0 --dir "$OUT/$h" > /dev/null; done
# Pairing codes of both cluster hosts go to one file (A's notifier script).
sed -i "s,$OUT/b/notify.sh,$OUT/a/notify.sh," "$OUT/b/yonexus.toml"
for h in a b; do
    printf '\n[store]\nbackend = "postgres"\nurl_env = "YONEXUS_POSTGRES_URL"\n\n[cluster]\nnode = "%s"\nnats = "%s"\n' \
        "$h" "$NATS_URL" >> "$OUT/$h/yonexus.toml"
done
YONEXUS_POSTGRES_URL=$PG_URL "$YONEXUS" migrate --config "$OUT/a/yonexus.toml" > "$OUT/migrate.txt" 2>&1 ||
    { cat "$OUT/migrate.txt" >&2; die "yonexus migrate failed"; }
for h in a b host; do
    YONEXUS_POSTGRES_URL=$PG_URL "$YONEXUS" check --config "$OUT/$h/yonexus.toml" > "$OUT/check-$h.txt" 2>&1 ||
        { cat "$OUT/check-$h.txt" >&2; die "yonexus check refuses $OUT/$h/yonexus.toml"; }
done

start_yonexus() { # NAME: starts target/release/yonexus with OUT/NAME/yonexus.toml; sets PID, URL
    : > "$OUT/$1.log"
    YONEXUS_POSTGRES_URL=$PG_URL $PRIO taskset -c 0 "$YONEXUS" serve --config "$OUT/$1/yonexus.toml" 2>> "$OUT/$1.log" &
    PID=$!
    URL=ws://$(wait_listening "host $1" "$PID" "$OUT/$1.log")/
}
start_yonexus a; A_PID=$PID; A_URL=$URL
start_yonexus b; B_PID=$PID; B_URL=$URL
if has host; then start_yonexus host; HOST_PID=$PID; HOST_URL=$URL; fi
if has node; then
    mkdir -p "$OUT/node/codes"
    : > "$OUT/node.log"
    $PRIO taskset -c 0 node "$HUB_RUN" --host 127.0.0.1 --port 0 --allow-prefix bench- \
        --code-dir "$OUT/node/codes" --state "$OUT/node/state.json" >> "$OUT/node.log" 2>&1 &
    NODE_PID=$!
    NODE_URL=ws://$(wait_listening node "$NODE_PID" "$OUT/node.log")/
fi

# CPU ticks of PostgreSQL: the postmaster and its live children, plus its reaped children.
pg_ticks() {
    {
        awk '{print $14 + $15 + $16 + $17}' "/proc/$PG_MASTER/stat"
        for c in $(cat "/proc/$PG_MASTER/task/$PG_MASTER/children" 2> /dev/null); do
            awk '{print $14 + $15}' "/proc/$c/stat" 2> /dev/null || true
        done
    } | awk '{s += $1} END {print s + 0}'
}

JSONL=$OUT/results.jsonl
CLUSTER_IDS="--codes-file $OUT/a/codes.txt --state-dir $OUT/cluster-identities"
# run LABEL SCENARIO ARGS…
run() {
    label=$1; shift
    if [ "$1" = auth ]; then # auth takes no --recv-url / --also-pid
        case $label in
            cross | cluster-a) label=cluster-a o="--url $A_URL $CLUSTER_IDS --host-pid $A_PID" ;;
            host) o="--url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID" ;;
            node) o="--url $NODE_URL --code-dir $OUT/node/codes --state-dir $OUT/node/bench-identities --host-pid $NODE_PID" ;;
        esac
    else case $label in
        cross) o="--url $A_URL --recv-url $B_URL $CLUSTER_IDS --host-pid $A_PID --recv-host-pid $B_PID --also-pid $NATS_PID" ;;
        cluster-a) o="--url $A_URL $CLUSTER_IDS --host-pid $A_PID --also-pid $B_PID --also-pid $NATS_PID" ;;
        host) o="--url $HOST_URL --codes-file $OUT/host/codes.txt --state-dir $OUT/host/bench-identities --host-pid $HOST_PID" ;;
        node) o="--url $NODE_URL --code-dir $OUT/node/codes --state-dir $OUT/node/bench-identities --host-pid $NODE_PID" ;;
        *) die "unknown label $label" ;;
    esac; fi
    lines=$(wc -l < "$JSONL" 2> /dev/null || echo 0)
    t0=$(date +%s.%N); p0=$(pg_ticks)
    bench_run "$label" "$o" "$@"
    t1=$(date +%s.%N); p1=$(pg_ticks)
    # PostgreSQL's CPU over the whole run (connect + auth included), % of a core.
    if [ "$(wc -l < "$JSONL" 2> /dev/null || echo 0)" -gt "$lines" ]; then
        pg=$(echo "$p0 $p1 $t0 $t1 $(getconf CLK_TCK)" | awk '{printf "%.2f", ($2 - $1) / $5 / ($4 - $3) * 100}')
        last=$(tail -n 1 "$JSONL" | jq -c --argjson pg "$pg" '. + {postgres_cpu_pct: $pg}')
        sed -i '$d' "$JSONL"
        echo "$last" >> "$JSONL"
    fi
}

machine start >> "$JSONL"
ps -eo pcpu,pid,comm --sort=-pcpu | head -n 12 > "$OUT/machine-top-at-start.txt"
# Pair every identity once per trust store (through A for the cluster); not in the table.
JSONL=$OUT/pairing.jsonl
PAIR=$(for l in $LABELS; do [ "$l" = cross ] && echo cluster-a || echo "$l"; done | sort -u)
for l in $PAIR; do run "$l" auth -n "$N" --pair-concurrency 32; done
[ -z "$FAILED" ] || die "pairing failed:$FAILED"
JSONL=$OUT/results.jsonl

T="--warmup $WARMUP --duration $SECS"
ORDER=$LABELS
r=0
while [ $r -lt "$REPEAT" ]; do
    r=$((r + 1))
    wait_quiet
    echo "## repeat $r of $REPEAT (order: $ORDER)" | tee -a "$OUT/results.txt"
    # shellcheck disable=SC2086 # $T is a list of options
    for s in "relay -n 50 -w 1" "relay -n 50 -w 16" "broadcast -n 100 -w 1" "broadcast -n 100 -w 16"; do
        for l in $ORDER; do run "$l" $s -s 100 $T; done
    done
    # Rotate who goes first.
    set -- $ORDER; first=$1; shift; ORDER="$* $first"
done
machine end >> "$JSONL"
cleanup

{
    echo "Command: \`bench/cluster.sh $ARGS\` (REPEAT=$REPEAT SECS=$SECS WARMUP=$WARMUP${QUIET:+ QUIET=$QUIET} NICE=$NICE); every server process pinned to core 0, yonexus-bench to core 1. Server CPU: cross and cluster-a = host A + host B + nats-server (each in brackets), host = the standalone host, node = the Node hub."
    echo
    "$BENCH" table "$JSONL" --ratio cross/cluster-a --ratio cross/host --ratio cross/node --ratio host/node
    echo
    echo "PostgreSQL CPU over each whole run (connect + auth included), % of a core: median $(jq -s '[.[] | select(.postgres_cpu_pct != null and .scenario != "auth") | .postgres_cpu_pct] | sort | .[length / 2 | floor]' "$JSONL"), max $(jq -s '[.[] | select(.postgres_cpu_pct != null and .scenario != "auth") | .postgres_cpu_pct] | max' "$JSONL")."
    if [ -n "$FAILED" ]; then printf '\nFailed runs:%s\n' "$FAILED"; fi
} > "$OUT/results.md"
cat "$OUT/a.log" "$OUT/b.log" "$OUT/host.log" 2> /dev/null | sed "s/$ESC\[[0-9;]*m//g" |
    grep -E ' WARN | ERROR ' > "$OUT/host-warnings.txt" || true
echo
cat "$OUT/results.md"
echo "host warnings/errors: $(wc -l < "$OUT/host-warnings.txt") lines ($OUT/host-warnings.txt)"
[ -z "$FAILED" ] || exit 1
