#!/usr/bin/env bash
# Does expiring many keys stall writes? (issue 14 target: expiry of 1M keys with TTLs does not stall
# writes for more than 10 ms at a time: p99.9 at 64 clients while they expire.)
#
#   1. Starts a 3-node raft-kv cluster on free loopback ports (a temporary directory; stopped by PID on
#      any exit) and loads KEYS_N keys (default 1,000,000) through the leader with EVAL scripts of
#      BATCH keys each (default 1000; scripts of 5000 keys held the node threads long enough to
#      lose the leader at load 10), `SET exp:<i> <value> PXAT <deadline>`, the deadlines spread
#      evenly over WINDOW_MS (default 5000) from LOAD_MARGIN_S (default 90) s after the load began.
#   2. baseline: CLIENTS clients (default 64) write for DURATION seconds (default 15) over all nodes
#      with the 1M keys present and not yet due.
#   3. expiry: the same run started 0.5 s before the first deadline, so the whole window and the
#      leader's sweeps fall inside it; INFO keyspace on the leader is polled every 100 ms meanwhile.
#   4. after: the same run once the keys are reclaimed (INFO keyspace expires=0).
# Prints, per run, writes/s, write latency p50/p99/p99.9/max and the servers' CPU time, and when the key space was
# reclaimed (from the first deadline, and from the last). Compare runs of one invocation only (back
# to back, same key space size); report `uptime` with the numbers.
#
# Needs: cargo, python3, redis-cli. Extra arguments go to every server.
set -euo pipefail

KEYS_N=${KEYS_N:-1000000}
WINDOW_MS=${WINDOW_MS:-5000}
LOAD_MARGIN_S=${LOAD_MARGIN_S:-90}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-15}
BATCH=${BATCH:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/raft-kv}

for cmd in python3 redis-cli; do
    command -v "$cmd" >/dev/null || { echo "expiry-stall: $cmd is missing" >&2; exit 1; }
done
[ $((KEYS_N % BATCH)) = 0 ] || { echo "expiry-stall: KEYS_N must be a multiple of BATCH" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir raft-kv-expiry-stall
read -r -a PORTS <<<"$(free_ports 6)"
start_raft_kv "$BIN" "${PORTS[@]}" "$@"
SERVERS=("${PIDS[@]}")
ALL=$RK_EPS
for n in $(seq 1 120); do
    if "$BIN" bench --target raft-kv --endpoints "$ALL" -c 1 -n 1 --timeout 1s --json --no-progress \
        >/dev/null 2>&1; then
        break
    fi
    [ "$n" = 120 ] && { echo "expiry-stall: the cluster did not become ready" >&2; exit 1; }
    sleep 0.5
done
LEADER=""
for ep in "${RK_ENDPOINTS[@]}"; do
    if redis-cli -p "${ep##*:}" INFO 2>/dev/null | grep -q "^role:leader"; then LEADER=${ep##*:}; fi
done
[ -n "$LEADER" ] || { echo "expiry-stall: no leader found" >&2; exit 1; }

now_ms() { date +%s%3N; }
keyspace() { # prints "keys expires" of the leader
    redis-cli -p "$LEADER" INFO keyspace 2>/dev/null | tr -d '\r' |
        sed -n 's/^db0:keys=\([0-9]*\),expires=\([0-9]*\).*/\1 \2/p' | grep . || echo "0 0"
}
report() { # label
    python3 -c '
import json, sys
d = json.load(sys.stdin)
l = d["latency_us"]
print("%-9s %6.0f writes/s  p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  errors %d" % (
    sys.argv[1], d["ops_per_sec"], l["p50"] / 1e3, l["p99"] / 1e3, l["p999"] / 1e3, l["max"] / 1e3, d["errors"]))
' "$1"
}
cpu_ticks() { # utime + stime of the three servers
    local t=0 pid f
    for pid in "${SERVERS[@]}"; do
        read -r -a f <"/proc/$pid/stat"
        t=$((t + f[13] + f[14]))
    done
    echo "$t"
}
run() { # label
    local before after
    before=$(cpu_ticks)
    "$BIN" bench --target raft-kv --endpoints "$ALL" -w write -c "$CLIENTS" --duration "${DURATION}s" \
        --json --no-progress | tee "$WORK/$1.json" | report "$1"
    after=$(cpu_ticks)
    python3 -c "import os; print('          servers used %.1f CPU-s in the %s s' % (($after - $before) / os.sysconf('SC_CLK_TCK'), $DURATION))"
}

echo "uptime: $(uptime)"
echo "keys with a TTL: $KEYS_N, deadlines over $WINDOW_MS ms; $CLIENTS clients, $DURATION s per run"
SCRIPT='local base, n, at, spread = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = base, base + n - 1 do redis.call("SET", "exp:" .. i, ARGV[5], "PXAT", at + (i % spread)) end
return n'
SHA=$(redis-cli -p "$LEADER" SCRIPT LOAD "$SCRIPT")
LOAD_START=$(now_ms)
FIRST=$((LOAD_START + LOAD_MARGIN_S * 1000))
LAST=$((FIRST + WINDOW_MS - 1))
for ((base = 0; base < KEYS_N; base += BATCH)); do
    echo "EVALSHA $SHA 0 $base $BATCH $FIRST $WINDOW_MS value-of-an-expiring-key-$base"
done | redis-cli -p "$LEADER" >"$WORK/load.out"
LOADED=$(now_ms)
if [ "$(grep -cx "$BATCH" "$WORK/load.out")" != $((KEYS_N / BATCH)) ]; then
    echo "expiry-stall: the load failed: $(grep -vx "$BATCH" "$WORK/load.out" | head -3)" >&2
    exit 1
fi
read -r KEYS EXPIRES <<<"$(keyspace)"
echo "loaded in $(((LOADED - LOAD_START) / 1000)) s: keys=$KEYS expires=$EXPIRES"
[ "$EXPIRES" = "$KEYS_N" ] || { echo "expiry-stall: expected expires=$KEYS_N" >&2; exit 1; }
if [ $((LOADED + DURATION * 1000 + 3000)) -ge "$FIRST" ]; then
    echo "expiry-stall: the load left no time for the baseline before the first deadline; raise LOAD_MARGIN_S" >&2
    exit 1
fi

# INFO keyspace is polled every 100 ms during the baseline and the expiry runs alike.
(
    while :; do
        echo "$(($(now_ms) - FIRST)) $(keyspace)"
        sleep 0.1
    done
) >"$WORK/keyspace.log" &
POLLER=$!
PIDS+=("$POLLER")
run baseline
wait_until() { # ms
    local left=$(($1 - $(now_ms)))
    if [ "$left" -gt 0 ]; then sleep "$(python3 -c "print($left / 1000)")"; fi
}
wait_until $((FIRST - 500))
run expiry
kill "$POLLER" 2>/dev/null || true
wait "$POLLER" 2>/dev/null || true
for _ in $(seq 1 1800); do
    KS=$(keyspace)
    echo "$(($(now_ms) - FIRST)) $KS" >>"$WORK/keyspace.log"
    [ "${KS#* }" = 0 ] && break
    sleep 0.1
done
python3 - "$WORK/keyspace.log" "$WINDOW_MS" <<'EOF'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
rows = [r for r in rows if r[0] >= -500]
window = int(sys.argv[2])
done = [t for t, keys, expires in rows if expires == 0]
first_drop = [t for t, keys, expires in rows if expires < rows[0][2]]
print("keyspace (leader, polled every 100 ms): %d keys with a TTL 0.5 s before the first deadline" % rows[0][2])
if first_drop:
    print("  first sweep seen %d ms after the first deadline" % first_drop[0])
if done:
    print("  all reclaimed %d ms after the first deadline, %d ms after the last" % (done[0], done[0] - window))
else:
    print("  not reclaimed while polled (last: keys=%d expires=%d at %d ms)" % (rows[-1][1], rows[-1][2], rows[-1][0]))
EOF
[ "$(keyspace | cut -d' ' -f2)" = 0 ] || { echo "expiry-stall: keys still due 180 s after the run" >&2; exit 1; }
echo "keyspace after: $(keyspace)"
run after
echo "uptime: $(uptime)"
