#!/usr/bin/env bash
# CPU per replicated write as a count of user-space instructions, which does not depend on what else
# the machine is doing (the CPU-time numbers of write-probe.sh do): a fresh 3-node cluster with every
# node under `valgrind --tool=callgrind`, OPS writes (default 20000) from CLIENTS clients (default 64)
# over all three nodes, a graceful stop, and the three servers' instructions summed and divided by
# OPS. Start-up and shutdown are included: keep OPS large. BINS="a b ..." (default: this worktree's
# release build) runs each binary in turn, PAIRS times (default 1), the order alternating between
# rounds, for A/B comparisons. With KEEP_PROFILES=DIR the callgrind files are copied to DIR/<run>/
# for `callgrind_annotate`.
#
# What it does not count: the kernel's work (system calls, loopback TCP, fsync): compare system calls
# separately (e.g. `strace -c -f` or `perf trace -s`).
#
# Under callgrind a node runs ~50x slower, so ticks are made longer (--tick-ms 100: a 2.5 s election
# timeout) to keep the leader in place; batches are larger than natively, so compare builds with this
# script, not with native runs. Extra arguments go to every server.
#
# Needs: cargo, valgrind, python3.
set -euo pipefail

CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
PAIRS=${PAIRS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEFAULT_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/raft-kv
BINS=${BINS:-$DEFAULT_BIN}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2
EXTRA=("$@")

one_run() { # BIN LABEL -> prints "instructions-per-write wall-s"
    (
        # shellcheck source=bench/lib.sh
        . "$ROOT/bench/lib.sh"
        bench_workdir raft-kv-write-instructions
        read -r -a ports <<<"$(free_ports 6)"
        cg="valgrind --tool=callgrind --callgrind-out-file=$WORK/callgrind.%p.out --dump-instr=no"
        wrapper="$WORK/raft-kv-under-callgrind"
        printf '#!/bin/sh\nexec %s %q "$@"\n' "$cg" "$1" >"$wrapper"
        chmod +x "$wrapper"
        start_raft_kv "$wrapper" "${ports[@]}" --tick-ms 100 --request-timeout-ms 60000 ${EXTRA[@]+"${EXTRA[@]}"}
        for n in $(seq 1 240); do
            if "$1" bench --target raft-kv --endpoints "$RK_EPS" -c 1 -n 1 --timeout 5s --json --no-progress \
                >/dev/null 2>&1; then break; fi
            [ "$n" = 240 ] && { echo "write-instructions: the cluster did not become ready" >&2; exit 1; }
            sleep 0.5
        done
        started=$(date +%s.%N)
        "$1" bench --target raft-kv --endpoints "$RK_EPS" -w write -c "$CLIENTS" -n "$OPS" --timeout 60s \
            --json --no-progress >"$WORK/bench.json"
        wall=$(python3 -c "import time; print('%.1f' % (time.time() - $started))")
        for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
        for pid in "${PIDS[@]}"; do wait "$pid" || true; done
        PIDS=()
        errors=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$WORK/bench.json")
        [ "$errors" = 0 ] || { echo "write-instructions: $errors errors in the run" >&2; exit 1; }
        total=0
        for f in "$WORK"/callgrind.*.out; do
            t=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f")
            total=$((total + t))
        done
        if [ -n "${KEEP_PROFILES:-}" ]; then
            mkdir -p "$KEEP_PROFILES/$2"
            cp "$WORK"/callgrind.*.out "$KEEP_PROFILES/$2/"
        fi
        printf '%s ' "$((total / OPS))"
        echo "$wall"
    )
}

echo "load: $(uptime)"
read -r -a bins <<<"$BINS"
for p in $(seq 1 "$PAIRS"); do
    order=("${bins[@]}")
    if [ $((p % 2)) = 0 ]; then
        order=()
        for ((i = ${#bins[@]} - 1; i >= 0; i--)); do order+=("${bins[$i]}"); done
    fi
    for bin in "${order[@]}"; do
        label="run$p-$(basename "$bin")"
        read -r per_write wall <<<"$(one_run "$bin" "$label")"
        echo "round $p $bin: $per_write instructions per write (3 servers), bench ${wall} s"
    done
done
echo "load: $(uptime)"
