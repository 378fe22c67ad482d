#!/usr/bin/env bash
# Draws the results of `RESULTS=DIR bench/compare-etcd.sh` as PNG charts with gnuplot:
#   DIR/throughput-WORKLOAD.png   ops/s against clients (both log scale), one line per system
#   DIR/latency-WORKLOAD.png      p50 and p99 latency against clients, per system
# Usage: bench/chart.sh DIR [WORKLOAD ...]   (workloads default to those found in DIR)
#
# Needs: jq and gnuplot (Debian's jq and gnuplot-nox; installed when missing and running as root).
set -euo pipefail

DIR=${1:?usage: bench/chart.sh DIR [WORKLOAD ...]}
shift
[ -d "$DIR" ] || { echo "chart: $DIR is not a directory" >&2; exit 1; }

for pkg in jq:jq gnuplot:gnuplot-nox; do
    cmd=${pkg%%:*}
    command -v "$cmd" >/dev/null && continue
    if [ "$(id -u)" != 0 ]; then
        echo "chart: $cmd is missing: install the Debian package ${pkg#*:}" >&2
        exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg#*:}" >/dev/null
done

WORKLOADS=("$@")
if [ ${#WORKLOADS[@]} -eq 0 ]; then
    mapfile -t WORKLOADS < <(find "$DIR" -name '*.json' -printf '%f\n' | sed -E 's/-[0-9]+-[a-z-]+\.json$//' | sort -u)
fi
[ ${#WORKLOADS[@]} -gt 0 ] || { echo "chart: no results in $DIR" >&2; exit 1; }

SUBTITLE=$(head -2 "$DIR/README.txt" 2>/dev/null | tr '\n' ';' | sed 's/;$//; s/;/; /g; s/"/'"'"'/g')
declare -A LABEL=([raft-kv]="raft-kv (3 nodes, fsync)" [etcd]="etcd (3 members, fsync)" [redis]="redis-server (1 node, in memory)")
declare -A COLOR=([raft-kv]="#7b2cbf" [etcd]="#2a9d8f" [redis]="#e76f51")

for wl in "${WORKLOADS[@]}"; do
    # One data file per system: clients ops/s p50_ms p99_ms, sorted by clients.
    plots_tp=()
    plots_lat=()
    for sys in raft-kv etcd redis; do
        data="$DIR/.$wl-$sys.dat"
        : >"$data"
        for f in "$DIR/$wl"-*-"$sys".json; do
            [ -s "$f" ] || continue
            c=$(basename "$f" | sed -E "s/^$wl-([0-9]+)-$sys\.json$/\1/")
            jq -r --arg c "$c" 'select(.ops_per_sec != null) |
                "\($c) \(.ops_per_sec) \(.latency_us.p50 / 1000) \(.latency_us.p99 / 1000)"' "$f" >>"$data"
        done
        sort -n -o "$data" "$data"
        [ -s "$data" ] || continue
        lc="lc rgb '${COLOR[$sys]}'"
        plots_tp+=("'$data' using 1:2 with linespoints lw 2 pt 7 $lc title '${LABEL[$sys]}'")
        plots_lat+=("'$data' using 1:3 with linespoints lw 2 pt 7 $lc title '${LABEL[$sys]} p50'")
        plots_lat+=("'$data' using 1:4 with linespoints lw 2 pt 5 dt 2 $lc title '${LABEL[$sys]} p99'")
    done
    [ ${#plots_tp[@]} -gt 0 ] || continue
    tp=$(IFS=,; echo "${plots_tp[*]}")
    lat=$(IFS=,; echo "${plots_lat[*]}")
    gnuplot <<EOF
set terminal pngcairo size 900,560 font 'DejaVu Sans,11'
set grid
set key top left
set logscale x 2
set xlabel 'concurrent clients (closed loop)'
set output '$DIR/throughput-$wl.png'
set title "$wl: throughput\n{/*0.8 $SUBTITLE}"
set ylabel 'operations per second (log scale)'
set logscale y 10
plot $tp
set output '$DIR/latency-$wl.png'
set title "$wl: latency\n{/*0.8 $SUBTITLE}"
set ylabel 'milliseconds (log scale)'
plot $lat
EOF
    rm -f "$DIR"/."$wl"-*.dat
    echo "chart: $DIR/throughput-$wl.png $DIR/latency-$wl.png"
done
