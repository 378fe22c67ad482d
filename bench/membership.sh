#!/usr/bin/env bash
# Membership changes on a loaded cluster, measured:
#   1. a 3-node cluster is loaded with KEYS keys (default 1,000,000; MSET of 100 keys, piped with
#      redis-cli --pipe), every node takes a snapshot (RAFT.SNAPSHOT), then 20,000 more writes go to
#      the log after it;
#   2. while `raft-kv bench` writes with CLIENTS clients (default 8), a new node D starts as a
#      standby and `raft-kv member add D,... --voter` adds it: the time until it is a voter is the
#      catch-up time (snapshot + log);
#   3. `raft-kv transfer-leader` to D, then `raft-kv member remove` of the old leader;
#   the bench's per-write latency (max) covers all of it; the longest gap between completed writes
#   is not measured here (see tests/membership.rs for that).
# Run under `flock /work/bench.lock`. Stops every process it started (by PID) on exit.
#
# Needs: cargo, python3, redis-cli (Debian's redis-tools).
set -euo pipefail

KEYS=${KEYS:-1000000}
CLIENTS=${CLIENTS:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/raft-kv}

for cmd in python3 redis-cli; do
    command -v "$cmd" >/dev/null || { echo "membership: $cmd is missing" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir raft-kv-membership
read -r -a PORTS <<<"$(free_ports 8)"
start_raft_kv "$BIN" "${PORTS[@]:0:6}" "$@"
GC=()
for i in 0 1 2; do GC+=("$(echo A B C | cut -d' ' -f$((i + 1))),127.0.0.1,${PORTS[$i]},${PORTS[$((i + 3))]}"); done
D="D,127.0.0.1,${PORTS[6]},${PORTS[7]}"
for n in $(seq 1 120); do
    "$BIN" member list --group-config "${GC[@]}" --timeout-ms 500 >/dev/null 2>&1 && break
    [ "$n" = 120 ] && { echo "membership: no leader" >&2; exit 1; }
    sleep 0.5
done
leader_port() {
    local p
    for p in "${PORTS[@]:0:3}"; do
        if redis-cli -p "$p" INFO raft 2>/dev/null | grep -q "^role:leader"; then echo "$p"; return; fi
    done
}
LP=""
for n in $(seq 1 100); do
    LP=$(leader_port)
    [ -n "$LP" ] && break
    sleep 0.2
done
[ -n "$LP" ] || { echo "membership: no leader" >&2; exit 1; }
echo "loading $KEYS keys through the leader (port $LP)..." >&2
t=$(date +%s.%N)
python3 - "$KEYS" <<'PY' | redis-cli -p "$LP" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
for start in range(0, n, 100):
    keys = range(start, min(n, start + 100))
    parts = [b"MSET"]
    for k in keys:
        parts += [b"key:%08d" % k, b"value-%010d" % k]
    out.write(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
PY
echo "loaded in $(python3 -c "import time; print(round(time.time() - $t, 1))") s" >&2
for p in "${PORTS[@]:0:3}"; do redis-cli -p "$p" RAFT.SNAPSHOT >/dev/null; done
"$BIN" bench --endpoints "127.0.0.1:$LP" -w write -c 8 -n 20000 --keys 100000 --no-progress >/dev/null
echo "dbsize: $(redis-cli -p "$LP" DBSIZE); snapshot: $(redis-cli -p "$LP" INFO raft | grep -E '^snapshot_(index|bytes)' | tr -d '\r' | tr '\n' ' ')"

"$BIN" bench --endpoints "$RK_EPS" -w write -c "$CLIENTS" -d 30s --keys 100000 --no-progress --json \
    >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH=$!
PIDS+=($BENCH)
sleep 3
"$BIN" server --group-config "$D" --id D --standby --data-dir "$WORK/raft-kv-D" "$@" >"$WORK/raft-kv-D.log" 2>&1 &
PIDS+=($!)
sleep 0.5
t=$(date +%s.%N)
"$BIN" member add "$D" --voter --group-config "${GC[@]}"
echo "D added and promoted in $(python3 -c "import time; print(round(time.time() - $t, 2))") s (holding $(redis-cli -p "${PORTS[6]}" DBSIZE) keys)"
sleep 3
OLD=$(redis-cli -p "$LP" INFO raft | grep ^node_id: | cut -d: -f2 | tr -d '\r')
t=$(date +%s.%N)
"$BIN" transfer-leader --to D --group-config "${GC[@]}" "$D"
echo "transfer took $(python3 -c "import time; print(round((time.time() - $t) * 1000))") ms (CLI round trips included)"
sleep 3
"$BIN" member remove "$OLD" --group-config "${GC[@]}" "$D"
"$BIN" member list --group-config "$D"
wait "$BENCH" || true
python3 - "$WORK/bench.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
try:
    r = json.loads(text)
except Exception:
    print("bench output:", text[:2000]); sys.exit(0)
def find(d, path=""):
    if isinstance(d, dict):
        for k, v in d.items():
            find(v, path + "." + k)
    elif not isinstance(d, list):
        if any(s in path for s in ("max", "p99", "ops", "errors", "throughput")):
            print(f"bench{path} = {d}")
find(r)
PY
echo "load: $(uptime)"
