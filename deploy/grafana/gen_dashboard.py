#!/usr/bin/env python3
"""Writes raft-kv.json, the Grafana dashboard of raft-kv's metrics (run it after editing the panels
below; the JSON is checked in so that it can be imported without running anything)."""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# (title, unit, [(expr, legend)], width, height, description)
PANELS = [
    ("Leader (1 = this node leads)", "none",
     [('raftkv_raft_role{role="leader"}', "{{instance}}")], 8, 7,
     "Exactly one node should be 1. Several at once: a stale leader until its term ends; none: no leader."),
    ("Term", "none", [("raftkv_raft_term", "{{instance}}")], 8, 7,
     "Rises with every election. A term that keeps rising means repeated elections."),
    ("Leader changes (per 5 min)", "none",
     [("increase(raftkv_raft_leader_changes_total[5m])", "{{instance}}")], 8, 7,
     "Leader changes seen by each node. Alert when frequent."),
    ("Committed entries / s", "ops",
     [("rate(raftkv_raft_commit_index[1m])", "{{instance}}")], 8, 7,
     "Write throughput in log entries per second."),
    ("Follower lag (entries, leader's view)", "none",
     [("raftkv_raft_peer_lag_entries", "{{instance}} -> {{peer}}")], 8, 7,
     "How far each follower's log is behind the leader's last index."),
    ("Apply backlog (commit - applied)", "none",
     [("raftkv_raft_commit_index - raftkv_raft_applied_index", "{{instance}}")], 8, 7,
     "Entries committed but not yet applied on each node."),
    ("Requests / s by command", "reqps",
     [("sum by (command) (rate(raftkv_requests_total[1m]))", "{{command}}")], 8, 7,
     "Requests answered by the node thread, all nodes."),
    ("Request latency p99 by command", "s",
     [("histogram_quantile(0.99, sum by (le, command) (rate(raftkv_request_duration_seconds_bucket[1m])))",
       "p99 {{command}}"),
      ("histogram_quantile(0.5, sum by (le, command) (rate(raftkv_request_duration_seconds_bucket[1m])))",
       "p50 {{command}}")], 8, 7,
     "From a request's arrival to its answer."),
    ("Failed requests / s by outcome", "reqps",
     [('sum by (outcome) (rate(raftkv_requests_total{outcome!="ok"}[1m]))', "{{outcome}}")], 8, 7,
     "not_executed: no leader (TRYAGAIN); timed_out: unknown fate; error: an error reply."),
    ("fsync latency p99", "s",
     [("histogram_quantile(0.99, sum by (le, instance) (rate(raftkv_fsync_duration_seconds_bucket[1m])))",
       "{{instance}}")], 8, 7,
     "Every write waits for one fsync on a majority."),
    ("Inputs per node-loop turn (mean)", "none",
     [("rate(raftkv_node_batch_inputs_sum[1m]) / rate(raftkv_node_batch_inputs_count[1m])", "{{instance}}")],
     8, 7, "Client requests and peer messages handled per turn (one fsync per turn)."),
    ("Client connections", "none", [("raftkv_client_connections", "{{instance}}")], 8, 7, ""),
    ("Peer links up", "none", [("raftkv_peer_connected", "{{instance}} -> {{peer}}")], 8, 7,
     "1 while the outbound link is established."),
    ("Peer reconnects and silent closes (per 5 min)", "none",
     [("increase(raftkv_peer_connects_total[5m])", "connects {{instance}} -> {{peer}}"),
      ("increase(raftkv_peer_silent_closes_total[5m])", "silent {{instance}} -> {{peer}}")], 8, 7,
     "A silent close: nothing heard for an election timeout (partition, dead host)."),
    ("Dropped peer messages / s", "ops",
     [("sum by (instance, reason) (rate(raftkv_peer_dropped_messages_total[1m]))", "{{instance}} {{reason}}")],
     8, 7, "peer_away: peer unreachable (expected during a partition); queue_full / lost: overload or broken links."),
    ("Snapshots", "bytes",
     [("raftkv_snapshot_size_bytes", "size {{instance}}")], 8, 7,
     "Size of the durable snapshot."),
    ("Snapshots taken / installed / sent (per 15 min)", "none",
     [("increase(raftkv_snapshots_taken_total[15m])", "taken {{instance}}"),
      ("increase(raftkv_snapshots_installed_total[15m])", "installed {{instance}}"),
      ("increase(raftkv_snapshots_sent_total[15m])", "sent {{instance}}")], 8, 7,
     "Installed/sent: a follower fell behind the leader's log and got the whole snapshot."),
    ("Snapshot write duration p99", "s",
     [("histogram_quantile(0.99, sum by (le, instance) (rate(raftkv_snapshot_duration_seconds_bucket[15m])))",
       "{{instance}}")], 8, 7, ""),
]


def panel(i, title, unit, targets, w, h, desc):
    x = (i % 3) * 8
    y = (i // 3) * h
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 0}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": e, "legendFormat": l}
                    for k, (e, l) in enumerate(targets)],
    }


dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
    "title": "raft-kv",
    "uid": "raft-kv",
    "description": "raft-kv cluster: leadership, replication, requests, disk, peer links, snapshots "
                   "(metrics of raft-kv server --metrics-listen; see docs/OPERATIONS.md)",
    "tags": ["raft-kv"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-15m", "to": "now"},
    "templating": {"list": []},
    "annotations": {"list": []},
    "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raft-kv.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
print(f"wrote {out}: {len(PANELS)} panels")
