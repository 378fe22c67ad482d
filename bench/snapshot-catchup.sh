#!/usr/bin/env bash
# A follower catching up by InstallSnapshot from a big leader (docs/BENCHMARKS.md, "Catching up by
# InstallSnapshot" and "A long turn of the node loop"): a 3-node cluster, KEYS keys of 100 bytes
# loaded through the leader, a follower killed (kill -9), WRITES more writes, RAFT.SNAPSHOT on the
# leader (compacting past everything the follower holds), the follower restarted. Prints how long
# after its start the follower had applied the leader's commit index, how long the restore job took
# (from its log), and the lines of the other nodes' logs about silent links and redials.
#
#   BIN=target/release/raft-kv KEYS=1000000 WRITES=20000 bash bench/snapshot-catchup.sh [SERVER ARGS...]
#
# Run under `flock /work/bench.lock`; report `uptime` with the numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BIN=${BIN:-target/release/raft-kv}
KEYS=${KEYS:-1000000}
WRITES=${WRITES:-20000}
bench_workdir snapshot-catchup

read -r -a P <<<"$(free_ports 6)"
IDS=(A B C)
GROUP=()
for i in 0 1 2; do
    GROUP+=("${IDS[$i]},127.0.0.1,${P[$i]},${P[$((i + 3))]}")
done
start_node() { # index -> starts node i, appends to its log, sets NODE_PID
    local i=$1
    RUST_LOG=${RUST_LOG:-info,raft_kv::node=debug} "$BIN" server --group-config "${GROUP[@]}" --id "${IDS[$i]}" \
        --data-dir "$WORK/raft-kv-${IDS[$i]}" "${@:2}" >>"$WORK/raft-kv-${IDS[$i]}.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}
info() { redis-cli -p "$1" INFO 2>/dev/null | tr -d '\r' | grep "^$2:" | cut -d: -f2; }

NODE_PIDS=()
for i in 0 1 2; do
    start_node "$i" "$@"
    NODE_PIDS+=("$NODE_PID")
done
leader=""
for _ in $(seq 100); do
    for i in 0 1 2; do
        if [ "$(info "${P[$i]}" role)" = leader ]; then leader=$i; fi
    done
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
follower=$(((leader + 1) % 3))
echo "leader ${IDS[$leader]} (port ${P[$leader]}), follower ${IDS[$follower]}"

# The read workload preloads every key of its key space (KEYS distinct keys, 100-byte values).
"$BIN" bench -w read --keys "$KEYS" --value-size 100 -c 64 -n 1 --endpoints "127.0.0.1:${P[$leader]}" >"$WORK/load.txt" 2>&1
echo "keys on the leader: $(redis-cli -p "${P[$leader]}" DBSIZE)"
kill -9 "${NODE_PIDS[$follower]}"
wait "${NODE_PIDS[$follower]}" 2>/dev/null || true
redis-benchmark -p "${P[$leader]}" -t set -r "$KEYS" -n "$WRITES" -d 100 -c 16 -q | tail -1
echo "RAFT.SNAPSHOT: $(redis-cli -p "${P[$leader]}" RAFT.SNAPSHOT)"
sleep 1
commit=$(info "${P[$leader]}" commit_index)
for i in 0 1 2; do : >"$WORK/mark-${IDS[$i]}"; done
marks=()
for i in 0 1 2; do marks+=("$(wc -l <"$WORK/raft-kv-${IDS[$i]}.log")"); done
started=$(date +%s.%N)
start_node "$follower" "$@"
applied=0
for _ in $(seq 600); do
    applied=$(info "${P[$follower]}" applied_index || true)
    if [ -n "$applied" ] && [ "$applied" -ge "$commit" ]; then break; fi
    sleep 0.01
done
done_at=$(date +%s.%N)
echo "follower applied $applied >= leader commit $commit $(echo "$done_at - $started" | bc) s after its start"
sleep 3 # (the replaced state machine is freed in the background; its log line comes later)
for i in 0 1 2; do
    tail -n +"$((marks[$i] + 1))" "$WORK/raft-kv-${IDS[$i]}.log" >"$WORK/after-${IDS[$i]}.log"
done
echo "--- follower ${IDS[$follower]}:"
grep -E "checked and loaded|installed a snapshot|slow turn|freed a replaced|recovered|snapshot job|raft state changed" "$WORK/after-${IDS[$follower]}.log" | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-240 || true
for i in 0 1 2; do
    [ "$i" = "$follower" ] && continue
    n=$(grep -c -E "silent|dial" "$WORK/after-${IDS[$i]}.log" || true)
    echo "--- ${IDS[$i]}: $n lines about silent links or dials"
    grep -E "silent|dial|raft state changed|slow turn" "$WORK/after-${IDS[$i]}.log" | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-240 || true
done
