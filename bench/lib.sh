# Shared by bench/bench.sh, bench/cores.sh and bench/cluster.sh (sourced, POSIX sh). Expects
# ROOT (the repository) and OUT (the output directory) to be set by the caller.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# find_node_hub: sets HUB_RUN to the Node peer hub (NODE_HUB=path/to/hub.mjs, else
# shared/peers/node-hub/hub.mjs in a parent directory); installs its dependencies into a copy
# under target/node-hub when the shared directory has none (it is not written to).
find_node_hub() {
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
        return 0
    fi
    HUB_DIR=$ROOT/target/node-hub
    mkdir -p "$HUB_DIR"
    cp "$NODE_HUB" "$HUB_DIR/hub.mjs"
    [ -f "$HUB_SRC/package.json" ] || die "$HUB_SRC/package.json missing: cannot install the hub's dependencies"
    [ -f "$HUB_SRC/package-lock.json" ] || die "$HUB_SRC/package-lock.json missing: npm ci needs it"
    if [ ! -d "$HUB_DIR/node_modules/ws" ] || ! cmp -s "$HUB_SRC/package-lock.json" "$HUB_DIR/package-lock.json"; then
        cp "$HUB_SRC/package.json" "$HUB_SRC/package-lock.json" "$HUB_DIR/"
        echo "$(basename "$0"): installing the Node hub's dependencies (npm ci in $HUB_DIR)" >&2
        (cd "$HUB_DIR" && npm ci --silent --no-audit --no-fund) ||
            die "npm ci failed in $HUB_DIR (is the npm registry reachable?)"
    fi
    HUB_RUN=$HUB_DIR/hub.mjs
}

# set_priority: PRIO runs a command at niceness NICE (default -10: on a machine shared with
# compile jobs a raised priority keeps servers and generator from being preempted mid-run;
# NICE=0 disables it; raising needs root, otherwise the normal priority is used).
set_priority() {
    NICE=${NICE:--10}
    if [ "$NICE" != 0 ] && [ "$(nice -n "$NICE" nice 2> /dev/null)" != "$NICE" ]; then
        echo "$(basename "$0"): cannot run at niceness $NICE (not root?): running at normal priority" >&2
        NICE=0
    fi
    PRIO="nice -n $NICE"
}

ESC=$(printf '\033')
# The address a server logged ("listening address=IP:PORT" / "listening on ws://IP:PORT").
bound_addr() {
    sed "s/$ESC\[[0-9;]*m//g" "$1" | grep -v admin | grep listening |
        grep -o '\(address=\|ws://\)[0-9.]*:[0-9]*' | head -n 1 | sed 's/^address=//; s,^ws://,,'
}
wait_listening() { # NAME PID LOG: prints IP:PORT once the server logged it
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
stop_pid() { # PID: SIGTERM, up to 10 s, then SIGKILL
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2> /dev/null || return 0
    i=0
    while kill -0 "$1" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2> /dev/null || true
    wait "$1" 2> /dev/null || true
}

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
# wait_quiet: with QUIET=SECS, wait up to SECS until the machine's other processes use at most
# QUIET_MAX (30) % of a core (call it while nothing of ours runs).
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

# keep_results: rename an earlier run's result files in OUT with their time (never overwrite).
keep_results() {
    for f in results.txt results.jsonl results.md pairing.jsonl; do
        if [ -f "$OUT/$f" ]; then
            mv "$OUT/$f" "$OUT/${f%.*}-$(date -r "$OUT/$f" +%Y%m%dT%H%M%S).${f##*.}"
        fi
    done
}

# bench_run LABEL OPTIONS -- SCENARIO ARGS…: one yonexus-bench run pinned to core 1 at PRIO;
# OPTIONS (one word list: --url, --host-pid, …) go after the scenario's arguments. Its JSON
# line goes to $JSONL, its human output to OUT/results.txt; a failure is collected in FAILED.
FAILED=
bench_run() {
    label=$1; opts=$2; shift 2
    echo "### [$label] yonexus-bench $*" | tee -a "$OUT/results.txt"
    # shellcheck disable=SC2086 # $opts is a list of options
    if $PRIO taskset -c 1 "$BENCH" "$@" --label "$label" $opts > "$OUT/last.txt" 2> "$OUT/last.err"; then
        cat "$OUT/last.err" "$OUT/last.txt" | grep -v '^{' | tee -a "$OUT/results.txt"
        tail -n 1 "$OUT/last.txt" >> "$JSONL"
    else
        cat "$OUT/last.err" | tee -a "$OUT/results.txt" >&2
        echo "$(basename "$0"): [$label] $* FAILED (see above)" | tee -a "$OUT/results.txt" >&2
        FAILED="$FAILED
- [$label] yonexus-bench $*: $(tail -n 1 "$OUT/last.err")"
    fi
}
