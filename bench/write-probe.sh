#!/usr/bin/env bash
# The pieces of a replicated write on this machine, measured in one go:
#   - the disk: pwrite + fdatasync in the data directory, one process alone and three at once
#     (three nodes share this disk);
#   - the loopback round trip (redis-benchmark PING against a node);
#   - a single client writing to the leader (p50/p90/p99);
#   - CLIENTS clients (default 64) writing OPS writes (default 150000) over all three nodes, with the
#     servers' CPU time per 1000 writes (utime + stime from /proc/PID/stat).
# Starts a 3-node raft-kv cluster on free loopback ports in a temporary directory, stops it (by PID)
# on any exit. Extra arguments go to every server (e.g. --unsafe-no-fsync to isolate the software
# path). Compare builds only in runs made back to back: the machine and its disk are noisy.
#
# Needs: cargo, python3, redis-benchmark and redis-cli (Debian's redis-tools).
set -euo pipefail

CLIENTS=${CLIENTS:-64}
OPS=${OPS:-150000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/raft-kv}

for cmd in python3 redis-benchmark redis-cli; do
    command -v "$cmd" >/dev/null || { echo "write-probe: $cmd is missing" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir raft-kv-write-probe
read -r -a PORTS <<<"$(free_ports 6)"
start_raft_kv "$BIN" "${PORTS[@]}" "$@"
EPS=("${RK_ENDPOINTS[@]}")
ALL=$RK_EPS
for n in $(seq 1 120); do
    if "$BIN" bench --target raft-kv --endpoints "$ALL" -c 1 -n 1 --timeout 1s --json --no-progress \
        >/dev/null 2>&1; then
        break
    fi
    [ "$n" = 120 ] && { echo "write-probe: the cluster did not become ready" >&2; exit 1; }
    sleep 0.5
done
LEADER=""
for ep in "${EPS[@]}"; do
    if redis-cli -p "${ep##*:}" INFO 2>/dev/null | grep -q "^role:leader"; then LEADER=$ep; fi
done
[ -n "$LEADER" ] || { echo "write-probe: no leader found" >&2; exit 1; }

PROBE='
import os, sys, time
d = sys.argv[1]
path = os.path.join(d, "fsync-probe-%d" % os.getpid())
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
lat = []
for i in range(400):
    t = time.perf_counter()
    os.pwrite(fd, b"x" * 200, i * 200)
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
os.close(fd)
os.unlink(path)
lat.sort()
print("p50 %.3f p90 %.3f p99 %.3f ms" % (lat[200], lat[360], lat[396]))
'
echo "fdatasync alone:      $(python3 -c "$PROBE" "$WORK")"
PROBES=()
for k in 1 2 3; do
    python3 -c "$PROBE" "$WORK" >"$WORK/p$k" &
    PROBES+=($!)
done
wait "${PROBES[@]}"
echo "fdatasync, 3 at once: $(cat "$WORK/p1") | $(cat "$WORK/p2") | $(cat "$WORK/p3")"
echo "loopback round trip:  $(redis-benchmark -p "${LEADER##*:}" -t ping_mbulk -c 1 -n 20000 -q --precision 3 2>/dev/null \
    | tr '\r' '\n' | grep -o 'p50=[0-9.]* msec' | tail -1)"

report() { # label
    python3 -c '
import json, sys
d = json.load(sys.stdin)
l = d["latency_us"]
print("%s: %.0f ops/s, p50 %d p90 %d p99 %d max %d us, errors %d" % (sys.argv[1], d["ops_per_sec"], l["p50"], l["p90"], l["p99"], l["max"], d["errors"]))
' "$1"
}
"$BIN" bench --target raft-kv --endpoints "$LEADER" -w write -c 1 --duration 6s --json --no-progress \
    | report "1 client, leader     "

cpu() {
    local t=0 pid f
    for pid in "${PIDS[@]}"; do
        read -r -a f <"/proc/$pid/stat"
        t=$((t + f[13] + f[14]))
    done
    echo "$t"
}
before=$(cpu)
"$BIN" bench --target raft-kv --endpoints "$ALL" -w write -c "$CLIENTS" -n "$OPS" --json --no-progress \
    | report "$CLIENTS clients, all nodes"
after=$(cpu)
python3 -c "import os; print('server CPU: %.1f ms per 1000 writes (warm-up writes included)' % (($after - $before) * 1000.0 / os.sysconf('SC_CLK_TCK') / ($OPS / 1000)))"
