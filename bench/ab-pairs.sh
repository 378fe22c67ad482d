#!/usr/bin/env bash
# Two server builds or settings compared back to back, in alternating pairs (the order flips every
# pair, so a machine that gets busier or quieter during the runs favours neither side).
#
#   A="BIN [server args...]" B="BIN [server args...]" bash bench/ab-pairs.sh
#
# Each run starts a fresh 3-node cluster (free loopback ports, temporary directory, stopped by PID
# on any exit) and measures, with `raft-kv bench` from side A's binary (the same load generator for
# both sides):
#   1. one client writing to the leader for DURATION: p50 / p99 (us);
#   2. CLIENTS clients writing over all three nodes for DURATION: writes/s, p50 / p99 (ms), and the
#      three servers' CPU (utime + stime) and voluntary context switches per write;
#   3. CLIENTS clients reading (linearizable GET) over all three nodes for DURATION: reads/s, p50,
#      and the servers' CPU per read (the keys are those the writes just wrote: no preloading).
# Then prints the median of each column per side. Report `uptime` with the numbers: wall-clock
# figures taken while something else runs on the machine are not comparable with quiet ones.
#
# Environment: PAIRS=3, DURATION=5s, CLIENTS=64.
# Needs: python3, redis-cli (Debian's redis-tools).
set -euo pipefail

PAIRS=${PAIRS:-3}
DURATION=${DURATION:-5s}
CLIENTS=${CLIENTS:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${A:-}" ] && [ -n "${B:-}" ] || { echo "ab-pairs: set A and B (\"BIN [args...]\")" >&2; exit 1; }
for cmd in python3 redis-cli; do
    command -v "$cmd" >/dev/null || { echo "ab-pairs: $cmd is missing" >&2; exit 1; }
done
read -r -a SIDE_A <<<"$A"
read -r -a SIDE_B <<<"$B"
GEN=${SIDE_A[0]}
for bin in "${SIDE_A[0]}" "${SIDE_B[0]}"; do
    [ -x "$bin" ] || { echo "ab-pairs: $bin is not an executable" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir raft-kv-ab-pairs
RESULTS=$WORK/results
: >"$RESULTS"

# CPU ms (utime + stime) and voluntary context switches of every thread of the given processes.
usage() {
    python3 - "$@" <<'PY'
import glob, os, sys
tck = os.sysconf("SC_CLK_TCK")
cpu = vol = 0
for pid in sys.argv[1:]:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu += (int(f[11]) + int(f[12])) * 1000 / tck
    for t in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            vol += sum(int(l.split()[1]) for l in open(t) if l.startswith("voluntary_ctxt_switches"))
        except FileNotFoundError:
            pass
print(cpu, vol)
PY
}

one_run() { # side label, then the side's words
    local label=$1
    shift
    local bin=$1
    shift
    local before=${#PIDS[@]} ports leader="" ep n
    read -r -a ports <<<"$(free_ports 6)"
    start_raft_kv "$bin" "${ports[@]}" "$@"
    local servers=("${PIDS[@]:$before}")
    for n in $(seq 1 100); do
        for ep in "${RK_ENDPOINTS[@]}"; do
            if redis-cli -p "${ep##*:}" INFO 2>/dev/null | grep -q "^role:leader"; then leader=$ep; fi
        done
        [ -n "$leader" ] && break
        [ "$n" = 100 ] && { echo "ab-pairs: no leader" >&2; exit 1; }
        sleep 0.1
    done
    local one many reads u0 u1 u2
    one=$("$GEN" bench --target raft-kv --endpoints "$leader" -w write -c 1 --duration "$DURATION" --json --no-progress 2>/dev/null)
    u0=$(usage "${servers[@]}")
    many=$("$GEN" bench --target raft-kv --endpoints "$RK_EPS" -w write -c "$CLIENTS" --duration "$DURATION" --json --no-progress 2>/dev/null)
    u1=$(usage "${servers[@]}")
    # (Reads preload the keys first: that is outside the measured CPU only with --no-warmup, and the
    # writes just wrote keys from the same key space, so the reads find values either way.)
    reads=$("$GEN" bench --target raft-kv --endpoints "$RK_EPS" -w read -c "$CLIENTS" --duration "$DURATION" --no-warmup --json --no-progress 2>/dev/null)
    u2=$(usage "${servers[@]}")
    for pid in "${servers[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"/raft-kv-*  # the next run starts a new cluster (new ports, new data)
    python3 - "$label" "$one" "$many" "$reads" "$u0" "$u1" "$u2" <<'PY' | tee -a "$RESULTS"
import json, sys
label, one, many, reads = sys.argv[1], *(json.loads(x) for x in sys.argv[2:5])
(c0, v0), (c1, v1), (c2, v2) = (map(float, s.split()) for s in sys.argv[5:8])
ops = many["ops"] or 1
rops = reads["ops"] or 1
print(label, one["latency_us"]["p50"], one["latency_us"]["p99"], round(many["ops_per_sec"]),
      many["latency_us"]["p50"] / 1000, many["latency_us"]["p99"] / 1000,
      round((c1 - c0) * 1000 / ops, 1), round((v1 - v0) / ops, 2),
      round(reads["ops_per_sec"]), reads["latency_us"]["p50"] / 1000,
      round((c2 - c1) * 1000 / rops, 1), one["errors"] + many["errors"] + reads["errors"])
PY
}

echo "side | 1 client p50 / p99 us | $CLIENTS-client writes/s | p50 / p99 ms | server CPU ms/1000 writes | vol. ctx switches/write | $CLIENTS-client reads/s | p50 ms | server CPU ms/1000 reads | errors"
for p in $(seq 1 "$PAIRS"); do
    if [ $((p % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
        if [ "$side" = A ]; then one_run A "${SIDE_A[@]}"; else one_run B "${SIDE_B[@]}"; fi
    done
done
echo "medians (uptime: $(uptime | sed 's/.*load/load/'))"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for side in ("A", "B"):
    cols = list(zip(*[[float(x) for x in r[1:]] for r in rows if r[0] == side]))
    med = [statistics.median(c) for c in cols]
    print(side, "| 1 client p50 %.0f / p99 %.0f us | writes %.0f/s p50 %.2f / p99 %.2f ms | CPU %.1f ms/1000 | %.2f vcs/write | reads %.0f/s p50 %.2f ms | CPU %.1f ms/1000 | errors %.0f" % tuple(med))
PY
