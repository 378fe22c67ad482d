#!/usr/bin/env bash
# raft-kv vs etcd on this machine, measured by the same load generator (`raft-kv bench`), with a
# single redis-server as the ceiling.
#
# Starts a 3-node raft-kv cluster and a 3-member etcd cluster on loopback (free ports, data in a
# temporary directory, fsync on for both: raft-kv fsyncs by default, etcd always does), and one
# redis-server (no replication, no persistence: the in-memory ceiling users compare us with, not
# a durable peer), runs the same closed-loop workloads against each, interleaved, stops everything
# it started (by PID, on any exit) and prints one Markdown table. Reads are linearizable on raft-kv
# and etcd; redis-server has nothing to agree with.
#
# Environment (all optional):
#   DURATION=10s            measured time of each run
#   CLIENTS="1 16 64 256"   client counts
#   WORKLOADS="write read"  workloads (write, read, mixed; incr is raft-kv only)
#   KEYS=10000 VALUE_SIZE=100
#   KEEP=1                  keep the temporary directory (logs, data, JSON results)
#   RESULTS=DIR             copy the JSON results there (bench/chart.sh DIR draws them)
#   REDIS=0                 leave redis-server out
#   RAFT_KV_ARGS="..."      extra flags for every raft-kv server (e.g. --read-mode lease)
#   FLOOR=0                 skip the single-client floor (below)
#
# The single-client floor (issue 17: a write's p50 should be within 1.5x of it), measured in the
# same run after the table's cells: one client writing to the leader for DURATION, against
#   floor = client round trip + peer round trip + one fdatasync while the other replicas fsync too,
# where a round trip is the p50 of one client reading from the in-memory redis-server with the same
# load generator (a server that does next to nothing: loopback TCP, both processes' wake-ups and the
# client's own work; the peers are on the same loopback), and the fdatasync is the median of three
# probes running at once in the data directory (three replicas share this disk).
#
# Needs: cargo, and etcd (installed from Debian's etcd-server/etcd-client packages when missing
# and running as root), jq and redis-server (same).
set -euo pipefail

DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-"1 16 64 256"}
WORKLOADS=${WORKLOADS:-"write read"}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/raft-kv

log() { echo "compare-etcd: $*" >&2; }

need_pkg() { # command, packages...
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        log "$cmd is missing: install the Debian packages $* (as root)"
        exit 1
    fi
    log "installing $*"
    apt-get update -qq
    # policy-rc.d may start a system etcd service on 2379; we use our own free ports anyway.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need_pkg etcd etcd-server etcd-client
need_pkg jq jq
REDIS=${REDIS:-1}
[ "$REDIS" = 1 ] && need_pkg redis-server redis-server && need_pkg redis-cli redis-tools

log "building raft-kv (release)"
cargo build --release -p raft-kv --manifest-path "$ROOT/Cargo.toml" >&2

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_workdir raft-kv-vs-etcd
read -r -a PORTS <<<"$(free_ports 13)"
# raft-kv: server ports PORTS[0..2], core ports PORTS[3..5].
# shellcheck disable=SC2086 # RAFT_KV_ARGS is split into words on purpose
start_raft_kv "$BIN" "${PORTS[@]:0:6}" ${RAFT_KV_ARGS:-}

# etcd: client ports PORTS[6..8], peer ports PORTS[9..11].
ETCD_CLUSTER=""
ETCD_ENDPOINTS=()
for i in 0 1 2; do
    ETCD_CLUSTER+="${ETCD_CLUSTER:+,}e$i=http://127.0.0.1:${PORTS[$((i + 9))]}"
    ETCD_ENDPOINTS+=("127.0.0.1:${PORTS[$((i + 6))]}")
done
for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$WORK/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:${PORTS[$((i + 6))]}" \
        --advertise-client-urls "http://127.0.0.1:${PORTS[$((i + 6))]}" \
        --listen-peer-urls "http://127.0.0.1:${PORTS[$((i + 9))]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PORTS[$((i + 9))]}" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-token "bench-$$" \
        --initial-cluster-state new --logger zap --log-level warn \
        >"$WORK/etcd-$i.log" 2>&1 &
    PIDS+=($!)
done

ETCD_EPS=$(IFS=,; echo "${ETCD_ENDPOINTS[*]}")

# redis-server: PORTS[12]. In memory only (no RDB, no AOF), one I/O thread: the default setup.
TARGETS="raft-kv etcd"
REDIS_EPS="127.0.0.1:${PORTS[12]}"
if [ "$REDIS" = 1 ]; then
    redis-server --port "${PORTS[12]}" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null 2>&1 &
    PIDS+=($!)
    TARGETS="raft-kv etcd redis"
fi

# Ready when one write succeeds (the bench exits 0 only if an operation succeeded).
wait_ready() { # target endpoints
    local n
    for n in $(seq 1 120); do
        if "$BIN" bench --target "$1" --endpoints "$2" -c 1 -n 1 --timeout 1s --json --no-progress \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "$1 did not become ready; logs in $WORK"
    KEEP=1
    exit 1
}
wait_ready raft-kv "$RK_EPS"
wait_ready etcd "$ETCD_EPS"
[ "$REDIS" = 1 ] && wait_ready raft-kv "$REDIS_EPS"
log "ready (raft-kv $RK_EPS, etcd $ETCD_EPS, redis ${REDIS_EPS}); data and logs in $WORK"

# The disk's fsync floor, where the data lives: 200 x (pwrite 128 B + fdatasync).
FSYNC=$(python3 -c '
import os, statistics, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_CREAT | os.O_WRONLY, 0o600)
lat = []
for i in range(200):
    t = time.perf_counter()
    os.pwrite(fd, b"x" * 128, i * 128)
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(f"fdatasync p50 {lat[100]:.2f} ms, p99 {lat[197]:.2f} ms, mean {statistics.mean(lat):.2f} ms")
' "$WORK")
log "$FSYNC"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$WORK/results"
declare -A WARMED=()
for wl in $WORKLOADS; do
    for c in $CLIENTS; do
        for target in $TARGETS; do
            eps=$RK_EPS
            proto=$target
            [ "$target" = etcd ] && eps=$ETCD_EPS
            # redis-server speaks the same protocol as raft-kv: the same client drives both.
            [ "$target" = redis ] && eps=$REDIS_EPS && proto=raft-kv
            # Read workloads preload the keys once per target; later runs find them there.
            warm=()
            if [ "$wl" != write ] && [ -n "${WARMED[$target]:-}" ]; then
                warm=(--no-warmup)
            fi
            log "$wl, $c clients, $target, $DURATION"
            out="$WORK/results/$wl-$c-$target.json"
            "$BIN" bench --target "$proto" --endpoints "$eps" --workload "$wl" --clients "$c" \
                --duration "$DURATION" --keys "$KEYS" --value-size "$VALUE_SIZE" --json --no-progress \
                "${warm[@]}" >"$out" || true
            [ "$wl" != write ] && WARMED[$target]=1
            [ -s "$out" ] || echo '{}' >"$out"
        done
    done
done
FLOOR_LINE=""
if [ "${FLOOR:-1}" = 1 ] && [ "$REDIS" = 1 ]; then
    LEADER=""
    for ep in "${RK_ENDPOINTS[@]}"; do
        redis-cli -h "${ep%:*}" -p "${ep##*:}" INFO 2>/dev/null | grep -q '^role:leader' && LEADER=$ep
    done
    if [ -n "$LEADER" ]; then
        log "floor: 1 client writing to the leader $LEADER, 1 client reading from redis-server, fdatasync x3"
        "$BIN" bench --target raft-kv --endpoints "$LEADER" --workload write --clients 1 --duration "$DURATION" \
            --keys "$KEYS" --value-size "$VALUE_SIZE" --json --no-progress >"$WORK/results/floor-write-leader.json" || true
        "$BIN" bench --target raft-kv --endpoints "$REDIS_EPS" --workload read --clients 1 --duration "$DURATION" \
            --keys "$KEYS" --value-size "$VALUE_SIZE" --json --no-progress >"$WORK/results/floor-rtt-redis.json" || true
        FPROBE='
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe-%d" % os.getpid()), os.O_CREAT | os.O_WRONLY, 0o600)
lat = []
for i in range(400):
    t = time.perf_counter()
    os.pwrite(fd, b"x" * 128, i * 128)
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print("%.4f" % lat[200])
'
        FP=()
        for k in 1 2 3; do
            python3 -c "$FPROBE" "$WORK" >"$WORK/fsync3-$k" &
            FP+=($!)
        done
        wait "${FP[@]}"
        FLOOR_LINE=$(python3 -c '
import json, sys
w = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2]))
fs = sorted(float(open(f).read()) for f in sys.argv[3:6])
wp50 = w["latency_us"]["p50"] / 1000; rtt = r["latency_us"]["p50"] / 1000; fsync = fs[1]
floor = 2 * rtt + fsync
print("Single-client write to the leader: p50 %.3f ms (p99 %.3f, %d ops/s); floor = client round trip %.3f + "
      "peer round trip %.3f + fdatasync with 3 at once %.3f (p50s %s) = %.3f ms; p50 / floor = %.2f (target <= 1.5)"
      % (wp50, w["latency_us"]["p99"] / 1000, w["ops_per_sec"], rtt, rtt, fsync,
         "/".join("%.3f" % f for f in fs), floor, wp50 / floor))
' "$WORK/results/floor-write-leader.json" "$WORK/results/floor-rtt-redis.json" "$WORK"/fsync3-1 "$WORK"/fsync3-2 "$WORK"/fsync3-3 || true)
    else
        log "floor: no leader found; skipped"
    fi
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${RESULTS:-}" ]; then
    mkdir -p "$RESULTS"
    cp "$WORK"/results/*.json "$RESULTS"/
    {
        echo "machine: $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
        echo "raft-kv $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), etcd $(etcd --version | awk '/etcd Version/ {print $3}')$([ "$REDIS" = 1 ] && echo ", redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')")"
        echo "$DURATION per run, $KEYS keys, $VALUE_SIZE B values; $FSYNC"
    } >"$RESULTS/README.txt"
    log "results copied to $RESULTS"
fi

echo "machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'), $(df -T "$WORK" | awk 'NR == 2 {print $2}') under $WORK ($FSYNC); load average before $LOAD_BEFORE, after $LOAD_AFTER"
echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}'), raft-kv $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $DURATION per run, $KEYS keys, $VALUE_SIZE B values, uniform"
echo
echo "| workload | clients | raft-kv ops/s | etcd ops/s | ratio | raft-kv p50 / p99 ms | etcd p50 / p99 ms | errors raft-kv / etcd | redis-server ops/s | raft-kv / redis |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for wl in $WORKLOADS; do
    for c in $CLIENTS; do
        red="$WORK/results/$wl-$c-redis.json"
        [ -s "$red" ] || echo '{}' >"$red"
        jq -rn --slurpfile r "$WORK/results/$wl-$c-raft-kv.json" --slurpfile e "$WORK/results/$wl-$c-etcd.json" \
            --slurpfile d "$red" --arg wl "$wl" --arg c "$c" '
            def ops(x): (x.ops_per_sec // 0);
            def ms(x): ((x // 0) / 1000 * 100 | round) / 100;
            def lat(x): "\(ms(x.latency_us.p50)) / \(ms(x.latency_us.p99))";
            def ratio(a; b): if ops(b) > 0 then "\((ops(a) / ops(b) * 100 | round) / 100)" else "-" end;
            $r[0] as $r | $e[0] as $e | $d[0] as $d |
            "| \($wl) | \($c) | \(ops($r) | round) | \(ops($e) | round) | " + ratio($r; $e) +
            " | \(lat($r)) | \(lat($e)) | \($r.errors // "-") / \($e.errors // "-") | " +
            (if ops($d) > 0 then "\(ops($d) | round)" else "-" end) + " | " + ratio($r; $d) + " |"'
    done
done
if [ -n "$FLOOR_LINE" ]; then
    echo
    echo "$FLOOR_LINE"
fi
