#!/usr/bin/env bash
# What metrics cost: write throughput at CLIENTS clients (default 64) over a fresh 3-node cluster
# with metrics off (no --metrics-listen: nothing is collected) and on (--metrics-listen on a free
# port, and every node's /metrics scraped every SCRAPE_SECONDS (default 1; Prometheus' default is
# 15) during the run with curl, on this machine: a scraper's own CPU competes with the servers on a
# small machine, which a remote Prometheus does not), PAIRS pairs (default 3) back to back, the
# order alternating (off/on, on/off, ...).
# Each run writes OPS writes (default 200000). Prints one line per run and the mean of each side.
#
# Needs: cargo, python3, curl. Run it alone (hold /work/bench.lock on a shared machine).
set -euo pipefail

CLIENTS=${CLIENTS:-64}
OPS=${OPS:-200000}
PAIRS=${PAIRS:-3}
SCRAPE_SECONDS=${SCRAPE_SECONDS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/raft-kv}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2

one_run() { # off|on -> prints ops/s
    (
        # shellcheck source=bench/lib.sh
        . "$ROOT/bench/lib.sh"
        bench_workdir raft-kv-metrics-overhead
        read -r -a ports <<<"$(free_ports 6)"
        if [ "$1" = on ]; then
            start_raft_kv "$BIN" "${ports[@]}" --metrics-listen 127.0.0.1:0
        else
            start_raft_kv "$BIN" "${ports[@]}"
        fi
        for n in $(seq 1 120); do
            if "$BIN" bench --target raft-kv --endpoints "$RK_EPS" -c 1 -n 1 --timeout 1s --json --no-progress \
                >/dev/null 2>&1; then break; fi
            [ "$n" = 120 ] && { echo "metrics-overhead: the cluster did not become ready" >&2; exit 1; }
            sleep 0.5
        done
        if [ "$1" = on ]; then
            urls=$(grep -ho 'metrics on http://[0-9.:]*/metrics' "$WORK"/raft-kv-*.log | sed 's/^metrics on //')
            [ "$(echo "$urls" | wc -l)" = 3 ] || { echo "metrics-overhead: metrics endpoints not found" >&2; exit 1; }
            ( while true; do for u in $urls; do curl -s -o /dev/null "$u" || true; done; sleep "$SCRAPE_SECONDS"; done ) &
            PIDS+=($!)
        fi
        cpu() { # utime + stime of the three servers, in clock ticks
            local t=0 pid f
            for pid in "${PIDS[@]:0:3}"; do
                read -r -a f <"/proc/$pid/stat"
                t=$((t + f[13] + f[14]))
            done
            echo "$t"
        }
        before=$(cpu)
        result=$("$BIN" bench --target raft-kv --endpoints "$RK_EPS" -w write -c "$CLIENTS" -n "$OPS" --json \
            --no-progress | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %d" % (d["ops_per_sec"], d["errors"]))')
        after=$(cpu)
        echo "$result $(python3 -c "import os; print('%.1f' % (($after - $before) * 1000.0 / os.sysconf('SC_CLK_TCK') / ($OPS / 1000)))")"
    )
}

echo "load: $(uptime); scrape every $SCRAPE_SECONDS s"
declare -a off_r on_r off_c on_c
for p in $(seq 1 "$PAIRS"); do
    if [ $((p % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for side in $order; do
        read -r ops errors cpu_ms <<<"$(one_run "$side")"
        echo "pair $p metrics $side: $ops writes/s ($errors errors), server CPU $cpu_ms ms per 1000 writes"
        if [ "$side" = on ]; then on_r+=("$ops"); on_c+=("$cpu_ms"); else off_r+=("$ops"); off_c+=("$cpu_ms"); fi
    done
done
python3 -c '
import sys
mean = lambda s: sum(float(x) for x in s.split()) / len(s.split())
mo, mn, co, cn = (mean(a) for a in sys.argv[1:5])
print("mean off %.0f, on %.0f writes/s: throughput cost %.1f %%; server CPU per 1000 writes off %.1f, on %.1f ms (%+.1f %%)"
      % (mo, mn, (mo - mn) / mo * 100, co, cn, (cn - co) / co * 100))
' "${off_r[*]}" "${on_r[*]}" "${off_c[*]}" "${on_c[*]}"
echo "load: $(uptime)"
