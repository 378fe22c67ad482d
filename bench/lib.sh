# Shared by the bench/ scripts (source it; it defines functions and nothing else runs).
#
#   bench_workdir NAME        WORK=<new temporary directory>, PIDS=(); on exit, kill every PID in
#                             PIDS (ours only), wait for them, and remove WORK (kept with KEEP=1)
#   free_ports N              N distinct free loopback ports, held open together while picked
#   start_raft_kv BIN SERVER_PORT_1 SERVER_PORT_2 SERVER_PORT_3 CORE_PORT_1 CORE_PORT_2 CORE_PORT_3 [ARGS...]
#                             a 3-node raft-kv cluster (A, B, C) with data and logs in WORK/raft-kv-*;
#                             sets RK_ENDPOINTS=(host:port ...) and RK_EPS (comma-separated)

bench_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}

free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

start_raft_kv() {
    local bin=$1 i
    local ports=("$2" "$3" "$4" "$5" "$6" "$7")
    shift 7
    local ids=(A B C) group=()
    RK_ENDPOINTS=()
    for i in 0 1 2; do
        group+=("${ids[$i]},127.0.0.1,${ports[$i]},${ports[$((i + 3))]}")
        RK_ENDPOINTS+=("127.0.0.1:${ports[$i]}")
    done
    for i in 0 1 2; do
        "$bin" server --group-config "${group[@]}" --id "${ids[$i]}" --data-dir "$WORK/raft-kv-${ids[$i]}" "$@" \
            >"$WORK/raft-kv-${ids[$i]}.log" 2>&1 &
        PIDS+=($!)
    done
    RK_EPS=$(IFS=,; echo "${RK_ENDPOINTS[*]}")
}
