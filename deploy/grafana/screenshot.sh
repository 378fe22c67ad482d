#!/usr/bin/env bash
# Takes docs/dashboard.png: starts a 3-node raft-kv cluster on loopback with --metrics-listen, a
# Prometheus server scraping it every 2 s, a mixed load (raft-kv bench) with a few faults (the
# leader killed and restarted, a follower stopped for a while), then renders the panels of
# deploy/grafana/raft-kv.json from Prometheus (render.py: Chart.js, not Grafana, which is not
# installable here) and screenshots the page with headless Chromium.
# Needs: apt-get install prometheus chromium libjs-chart.js fonts-dejavu-core
# Stops only what it started (by pid) and removes its work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/dashboard.png}"
cargo build --release -p raft-kv >/dev/null
B="$PWD/target/release/raft-kv"
work="$(mktemp -d /tmp/raft-kv-dashboard.XXXXXX)"
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

read -r -a ports <<<"$(python3 -c 'import socket
ss=[socket.socket() for _ in range(10)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
names=(A B C)
group=()
for k in 0 1 2; do group+=("${names[$k]},127.0.0.1,${ports[$k]},${ports[$((k + 3))]}"); done
start_node() {
  local k=$1
  "$B" server --id "${names[$k]}" --data-dir "$work/${names[$k]}" --metrics-listen "127.0.0.1:${ports[$((k + 6))]}" \
    --snapshot-entries 20000 --group-config "${group[@]}" >>"$work/${names[$k]}.log" 2>&1 &
  pid[${names[$k]}]=$!
}
for k in 0 1 2; do start_node $k; done

cat >"$work/prometheus.yml" <<YML
global: { scrape_interval: 2s, evaluation_interval: 2s }
scrape_configs:
  - job_name: raft-kv
    static_configs:
      - targets: ["127.0.0.1:${ports[6]}", "127.0.0.1:${ports[7]}", "127.0.0.1:${ports[8]}"]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:${ports[9]}" >"$work/prometheus.log" 2>&1 &
pid[prometheus]=$!

endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
sleep 3
leader() {
  for k in 0 1 2; do
    if redis-cli -p "${ports[$k]}" info raft 2>/dev/null | grep -q '^role:leader'; then echo "$k"; return; fi
  done
  echo 0
}
bench() { "$B" bench --endpoints "$endpoints" -c "$1" -d "$2" -w mixed --read-ratio 0.7 >>"$work/bench.log" 2>&1 || true; }
echo "load 60 s, then faults"
bench 32 60s
l=$(leader); echo "kill -9 leader ${names[$l]}"; kill -9 "${pid[${names[$l]}]}"; wait "${pid[${names[$l]}]}" 2>/dev/null || true
bench 32 20s
start_node "$l"
bench 64 40s
f=$(( ($(leader) + 1) % 3 )); echo "stop follower ${names[$f]} for 30 s"; kill "${pid[${names[$f]}]}"; wait "${pid[${names[$f]}]}" 2>/dev/null || true
bench 16 30s
start_node "$f"
bench 32 60s
sleep 4
python3 deploy/grafana/render.py --prometheus "http://127.0.0.1:${ports[9]}" \
  --dashboard deploy/grafana/raft-kv.json --minutes 4.5 --out "$work/dashboard.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1830,1400 \
  --virtual-time-budget=5000 --screenshot="$work/dashboard.png" "file://$work/dashboard.html" >/dev/null 2>&1
cp "$work/dashboard.png" "$out"
echo "wrote $out"
