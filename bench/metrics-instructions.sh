#!/usr/bin/env bash
# What metrics cost in instructions, which do not depend on what else the machine is doing:
# a fresh 3-node cluster with every node under `valgrind --tool=callgrind`, OPS writes (default
# 20000) from CLIENTS clients (default 64), metrics off (no --metrics-listen) and on (and every
# node's /metrics scraped once during the run), PAIRS pairs (default 1), order alternating.
# Prints the three servers' instructions per write for each run (from start to graceful exit, so
# start-up is included: keep OPS large); with ANNOTATE=1, the inclusive counts of the functions
# whose names match METRICS_RE, node by node, on stderr.
#
# Under callgrind a node runs ~50x slower, so ticks are made longer (--tick-ms 100: a 2.5 s
# election timeout) to keep the leader in place; batches form as under a heavier load than
# natively, so compare "on" with "off" from this script, not with native runs.
#
# Needs: cargo, valgrind (callgrind_annotate), python3, curl. Hold /work/bench.lock on a shared
# machine only for the wall-clock numbers it also prints (instruction counts do not need it).
set -euo pipefail

CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
PAIRS=${PAIRS:-1}
METRICS_RE=${METRICS_RE:-'metrics::|prometheus_client|MeteredFs|metered|RequestTimer'}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/raft-kv}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2

one_run() { # off|on -> prints "instructions-per-write wall-s"
    (
        # shellcheck source=bench/lib.sh
        . "$ROOT/bench/lib.sh"
        bench_workdir raft-kv-metrics-instructions
        read -r -a ports <<<"$(free_ports 6)"
        cg="valgrind --tool=callgrind --callgrind-out-file=$WORK/callgrind.%p.out --dump-instr=no"
        wrapper="$WORK/raft-kv-under-callgrind"
        printf '#!/bin/sh\nexec %s %q "$@"\n' "$cg" "$BIN" >"$wrapper"
        chmod +x "$wrapper"
        local flags=(--tick-ms 100 --request-timeout-ms 60000)
        if [ "$1" = on ]; then flags+=(--metrics-listen 127.0.0.1:0); fi
        start_raft_kv "$wrapper" "${ports[@]}" "${flags[@]}"
        for n in $(seq 1 240); do
            if "$BIN" bench --target raft-kv --endpoints "$RK_EPS" -c 1 -n 1 --timeout 5s --json --no-progress \
                >/dev/null 2>&1; then break; fi
            [ "$n" = 240 ] && { echo "metrics-instructions: the cluster did not become ready" >&2; exit 1; }
            sleep 0.5
        done
        started=$(date +%s.%N)
        "$BIN" bench --target raft-kv --endpoints "$RK_EPS" -w write -c "$CLIENTS" -n "$OPS" --timeout 60s \
            --json --no-progress >"$WORK/bench.json"
        wall=$(python3 -c "import time; print('%.1f' % (time.time() - $started))")
        if [ "$1" = on ]; then
            for u in $(grep -ho 'metrics on http://[0-9.:]*/metrics' "$WORK"/raft-kv-*.log | sed 's/^metrics on //'); do
                curl -s -o /dev/null "$u"
            done
        fi
        for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
        for pid in "${PIDS[@]}"; do wait "$pid" || true; done
        PIDS=()
        errors=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$WORK/bench.json")
        [ "$errors" = 0 ] || { echo "metrics-instructions: $errors errors in the run" >&2; exit 1; }
        total=0
        for f in "$WORK"/callgrind.*.out; do
            t=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f")
            total=$((total + t))
            if [ "$1" = on ] && [ -n "${ANNOTATE:-}" ]; then
                callgrind_annotate --inclusive=yes "$f" 2>/dev/null | grep -E "$METRICS_RE" | head -20 >&2 || true
            fi
        done
        printf '%s ' "$((total / OPS))"
        echo "$wall"
    )
}

echo "load: $(uptime)"
for p in $(seq 1 "$PAIRS"); do
    if [ $((p % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for side in $order; do
        read -r per_write wall <<<"$(one_run "$side")"
        echo "pair $p metrics $side: $per_write instructions per write (3 servers), bench ${wall} s"
    done
done
echo "load: $(uptime)"
