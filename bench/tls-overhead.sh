#!/usr/bin/env bash
# What security costs: a fresh 3-node cluster per run, plain (no TLS, no password) vs secure (TLS
# on the client port with `raft-kv certs` certificates, every client connection authenticated as a
# user from a users file with an Argon2id hash, mutual TLS between peers against the same CA, and a
# cluster token in the peer handshake), PAIRS pairs (default 2) back
# to back, the order alternating (plain/secure, secure/plain, ...). Each run measures writes, then
# linearizable reads, at CLIENTS clients (default 64) for DURATION (default 10s) each, with
# `raft-kv bench` spreading its connections over the three nodes. Prints ops/s and server CPU per
# 1000 operations for each run and the means of each side.
#
# Needs: cargo, python3. Run it alone (hold /work/bench.lock on a shared machine).
set -euo pipefail

CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-10s}
PAIRS=${PAIRS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/raft-kv}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2

one_run() { # plain|secure -> prints "write_ops write_cpu read_ops read_cpu errors"
    (
        # shellcheck source=bench/lib.sh
        . "$ROOT/bench/lib.sh"
        bench_workdir raft-kv-tls-overhead
        read -r -a ports <<<"$(free_ports 6)"
        client=()
        if [ "$1" = secure ]; then
            "$BIN" certs --dir "$WORK/tls" node=localhost,127.0.0.1 >/dev/null
            echo "bench-password" >"$WORK/pass"
            echo "user bench on $(echo bench-password | "$BIN" passwd) ~* +@read +@write" >"$WORK/users.acl"
            head -c 32 /dev/urandom | base64 >"$WORK/token"
            start_raft_kv "$BIN" "${ports[@]}" --tls-cert "$WORK/tls/node.pem" --tls-key "$WORK/tls/node-key.pem" \
                --users-file "$WORK/users.acl" --cluster-token-file "$WORK/token" --peer-tls-ca "$WORK/tls/ca.pem" \
                --peer-tls-cert "$WORK/tls/node.pem" --peer-tls-key "$WORK/tls/node-key.pem"
            client=(--tls --cacert "$WORK/tls/ca.pem" --user bench --pass-file "$WORK/pass")
        else
            start_raft_kv "$BIN" "${ports[@]}"
        fi
        for n in $(seq 1 120); do
            if "$BIN" bench --target raft-kv --endpoints "$RK_EPS" -c 1 -n 1 --timeout 1s --json --no-progress \
                "${client[@]}" >/dev/null 2>&1; then break; fi
            [ "$n" = 120 ] && { echo "tls-overhead: the cluster did not become ready" >&2; exit 1; }
            sleep 0.5
        done
        cpu() { # utime + stime of the three servers, in clock ticks
            local t=0 pid f
            for pid in "${PIDS[@]:0:3}"; do
                read -r -a f <"/proc/$pid/stat"
                t=$((t + f[13] + f[14]))
            done
            echo "$t"
        }
        out=""
        errors=0
        for w in write read; do
            before=$(cpu)
            read -r ops ops_n errs <<<"$("$BIN" bench --target raft-kv --endpoints "$RK_EPS" -w "$w" -c "$CLIENTS" \
                -d "$DURATION" --json --no-progress "${client[@]}" |
                python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %d %d" % (d["ops_per_sec"], d["ops"], d["errors"]))')"
            after=$(cpu)
            errors=$((errors + errs))
            out="$out $ops $(python3 -c "import os; print('%.1f' % (($after - $before) * 1000.0 / os.sysconf('SC_CLK_TCK') / max($ops_n, 1) * 1000))")"
        done
        echo "$out $errors"
    )
}

echo "load: $(uptime)"
declare -a pw pr sw sr pwc prc swc src
for p in $(seq 1 "$PAIRS"); do
    if [ $((p % 2)) = 1 ]; then order="plain secure"; else order="secure plain"; fi
    for side in $order; do
        read -r w wc r rc errors <<<"$(one_run "$side")"
        echo "pair $p $side: writes $w/s (server CPU $wc ms per 1000), reads $r/s ($rc ms per 1000), $errors errors; load $(cut -d' ' -f1-3 /proc/loadavg)"
        if [ "$side" = secure ]; then sw+=("$w"); swc+=("$wc"); sr+=("$r"); src+=("$rc"); else pw+=("$w"); pwc+=("$wc"); pr+=("$r"); prc+=("$rc"); fi
    done
done
python3 -c '
import sys
mean = lambda s: sum(float(x) for x in s.split()) / len(s.split())
pw, sw, pr, sr, pwc, swc, prc, src = (mean(a) for a in sys.argv[1:9])
print("writes: plain %.0f, secure %.0f ops/s (%.1f %% slower); server CPU per 1000: %.1f vs %.1f ms" % (pw, sw, (pw - sw) / pw * 100, pwc, swc))
print("reads:  plain %.0f, secure %.0f ops/s (%.1f %% slower); server CPU per 1000: %.1f vs %.1f ms" % (pr, sr, (pr - sr) / pr * 100, prc, src))
' "${pw[*]}" "${sw[*]}" "${pr[*]}" "${sr[*]}" "${pwc[*]}" "${swc[*]}" "${prc[*]}" "${src[*]}"
echo "load: $(uptime)"
