//! Metrics read at scrape time from what the node thread publishes ([`crate::node::Status`]) and
//! from the transport's counters ([`crate::transport::TransportStats`]).
//!
//! Peers are labelled with their member name (`peer="B"`). Per-peer replication values (match
//! index, lag) exist only on the leader; a follower exports none, so a graph of lag shows the
//! current leader's view. Lag is exported once the leader knows the follower's match index (a new
//! leader learns it from the follower's first answer).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::cluster::Group;
use crate::node::NodeHandle;
use crate::transport::Transport;

/// Reads the node's status and the transport's counters on every scrape.
pub struct StatusCollector {
    /// The node thread's published status.
    pub node: NodeHandle,
    /// The peer transport.
    pub transport: Transport,
    /// The group (for member names).
    pub group: Group,
}

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCollector").field("transport", &self.transport).finish_non_exhaustive()
    }
}

/// Roles exported as a state set (`raftkv_raft_role{role=...}` is 1 for the current one).
const ROLES: [&str; 4] = ["follower", "pre-candidate", "candidate", "leader"];

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// One metric family with a value per label set.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in values {
        let inner = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(u64::try_from(*v).unwrap_or(0)).encode(inner)?,
            _ => ConstGauge::new(*v).encode(inner)?,
        }
    }
    Ok(())
}

/// Every member's name by node id: the current membership's records first (members added after
/// the bootstrap `-gc` group are known only there), then the bootstrap group (a removed peer the
/// transport still counts). An id in neither is labelled by its number.
fn member_names(st: &crate::node::Status, group: &Group) -> std::collections::BTreeMap<u64, String> {
    let mut names: std::collections::BTreeMap<u64, String> =
        group.node_ids().into_iter().filter_map(|id| Some((id, group.by_id(id)?.name.clone()))).collect();
    for m in &st.members {
        if let Some(name) = m.record.split(',').next().filter(|n| !n.is_empty()) {
            names.insert(m.id, name.to_string());
        }
    }
    names
}

/// Clamps a counter or index to a gauge's range.
fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for StatusCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.node.status();
        let names = member_names(&st, &self.group);
        let name_of = |id: u64| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
        let roles: Vec<([(&str, &str); 1], i64)> =
            ROLES.iter().map(|&r| ([("role", r)], i64::from(st.role == r))).collect();
        family(&mut e, "raft_role", "1 for this node's current Raft role", MetricType::Gauge, &roles)?;
        gauge(&mut e, "raft_term", "Current Raft term", i(st.term))?;
        gauge(
            &mut e,
            "raft_leader_id",
            "Node id of the known leader (0: none known)",
            i(st.leader.unwrap_or(0)),
        )?;
        gauge(&mut e, "raft_has_leader", "1 if this node knows a leader", i64::from(st.leader.is_some()))?;
        counter(
            &mut e,
            "raft_leader_changes",
            "Times this node saw the leader change to another known leader (since it started)",
            st.leader_changes,
        )?;
        counter(
            &mut e,
            "proposals_retried",
            "Writes this node routed to a leader again: after a leader change, or unanswered for a second \
             (the retry is harmless: sessions apply a write at most once)",
            st.writes_retried,
        )?;
        gauge(&mut e, "raft_commit_index", "Highest log index known committed", i(st.commit))?;
        gauge(&mut e, "raft_applied_index", "Highest log index applied to the state machine", i(st.applied))?;
        gauge(&mut e, "raft_last_log_index", "Last index in this node's log", i(st.last_index))?;
        gauge(
            &mut e,
            "raft_log_first_index",
            "First index still in the log (before it: the snapshot)",
            i(st.log_first_index),
        )?;
        let peers: Vec<(String, u64)> = st.peers.iter().map(|&(p, m)| (name_of(p), m)).collect();
        let matched: Vec<([(&str, &str); 1], i64)> =
            peers.iter().map(|(p, m)| ([("peer", p.as_str())], i(*m))).collect();
        family(
            &mut e,
            "raft_peer_match_index",
            "Leader: highest index known replicated on the peer",
            MetricType::Gauge,
            &matched,
        )?;
        // A new leader knows a follower's match index only once the follower answered (0 before):
        // no lag is exported until then, rather than a spike of the whole log.
        let lag: Vec<([(&str, &str); 1], i64)> = peers
            .iter()
            .filter(|(_, m)| *m > 0)
            .map(|(p, m)| ([("peer", p.as_str())], i(st.last_index.saturating_sub(*m))))
            .collect();
        family(
            &mut e,
            "raft_peer_lag_entries",
            "Leader: entries of its log the peer does not have yet",
            MetricType::Gauge,
            &lag,
        )?;
        gauge(
            &mut e,
            "pending_requests",
            "Client requests waiting for an answer in the node thread",
            i(st.pending as u64),
        )?;
        gauge(&mut e, "keys", "Keys in the state machine", i(st.keys as u64))?;
        gauge(&mut e, "snapshot_index", "Last index covered by the durable snapshot", i(st.snapshot_index))?;
        gauge(&mut e, "snapshot_size_bytes", "Size of the durable snapshot file", i(st.snapshot_bytes))?;
        gauge(
            &mut e,
            "snapshot_in_progress",
            "1 while a snapshot is being written",
            i64::from(st.snapshot_in_progress),
        )?;
        gauge(
            &mut e,
            "snapshot_sending",
            "Followers a snapshot is being sent to",
            i(st.snapshot_sending as u64),
        )?;
        gauge(
            &mut e,
            "snapshot_receiving",
            "1 while a snapshot is being received",
            i64::from(st.snapshot_receiving),
        )?;
        let s = &st.snapshot_stats;
        counter(&mut e, "snapshots_taken", "Snapshots written and installed locally", s.taken)?;
        counter(
            &mut e,
            "snapshots_installed",
            "Snapshots received from a leader and installed",
            s.installed,
        )?;
        counter(&mut e, "snapshots_sent", "InstallSnapshot transfers completed to followers", s.sent)?;
        counter(
            &mut e,
            "snapshot_chunks_sent",
            "InstallSnapshot chunks sent (retransmissions included)",
            s.chunks_sent,
        )?;
        counter(
            &mut e,
            "snapshots_rejected",
            "Received snapshots refused (damaged or inconsistent)",
            s.rejected,
        )?;

        let t = self.transport.stats();
        let per_peer = |f: &dyn Fn(&crate::transport::PeerStats) -> u64| -> Vec<([(&str, String); 1], i64)> {
            t.peers.iter().map(|(&id, p)| ([("peer", name_of(id))], i(f(p)))).collect()
        };
        family(
            &mut e,
            "peer_connected",
            "1 while the outbound link to the peer is established",
            MetricType::Gauge,
            &per_peer(&|p| u64::from(p.connected)),
        )?;
        family(
            &mut e,
            "peer_connects",
            "Outbound connections established (reconnects: this minus 1)",
            MetricType::Counter,
            &per_peer(&|p| p.connects),
        )?;
        family(
            &mut e,
            "peer_connect_failures",
            "Failed dials or handshakes",
            MetricType::Counter,
            &per_peer(&|p| p.connect_failures),
        )?;
        family(
            &mut e,
            "peer_silent_closes",
            "Connections closed after hearing nothing for the idle timeout",
            MetricType::Counter,
            &per_peer(&|p| p.silent_closes),
        )?;
        family(
            &mut e,
            "peer_sent_messages",
            "Messages written to the peer",
            MetricType::Counter,
            &per_peer(&|p| p.sent),
        )?;
        family(
            &mut e,
            "peer_sent_bytes",
            "Bytes written to the peer",
            MetricType::Counter,
            &per_peer(&|p| p.sent_bytes),
        )?;
        family(
            &mut e,
            "peer_received_messages",
            "Messages received from the peer",
            MetricType::Counter,
            &per_peer(&|p| p.received),
        )?;
        family(
            &mut e,
            "peer_received_bytes",
            "Bytes received from the peer",
            MetricType::Counter,
            &per_peer(&|p| p.received_bytes),
        )?;
        family(
            &mut e,
            "peer_queued_messages",
            "Messages waiting in the peer's outbound queue",
            MetricType::Gauge,
            &per_peer(&|p| p.queued as u64),
        )?;
        let mut dropped: Vec<([(&str, String); 2], i64)> = Vec::new();
        for (&id, p) in &t.peers {
            for (reason, v) in
                [("queue_full", p.dropped_full), ("lost", p.dropped_lost), ("peer_away", p.dropped_away)]
            {
                dropped.push(([("peer", name_of(id)), ("reason", reason.to_string())], i(v)));
            }
        }
        family(
            &mut e,
            "peer_dropped_messages",
            "Messages to the peer dropped: queue full, lost with a failed connection or too large, or peer away (unreachable)",
            MetricType::Counter,
            &dropped,
        )?;
        counter(
            &mut e,
            "peer_rejected_connections",
            "Inbound peer connections refused (bad handshake, unknown peer, timeout)",
            t.rejected_connections,
        )?;
        counter(
            &mut e,
            "peer_bad_frames",
            "Inbound peer connections closed for a malformed frame",
            t.closed_bad_frames,
        )?;
        counter(
            &mut e,
            "peer_invalid_messages",
            "Well-formed inbound peer messages dropped (unknown kind, wrong addressing)",
            t.invalid_messages,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{MemberStatus, Status};

    #[test]
    fn members_added_after_bootstrap_are_named_from_the_membership() {
        let group =
            Group::parse(&["A,localhost,10001,20001".into(), "B,localhost,10002,20002".into()]).unwrap();
        let st = Status {
            members: vec![
                MemberStatus { id: 1, record: "A,localhost,10001,20001".into(), ..Default::default() },
                MemberStatus { id: 3, record: "D,10.0.0.4,10004,20004".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let names = member_names(&st, &group);
        assert_eq!(names.get(&1).map(String::as_str), Some("A"));
        assert_eq!(names.get(&2).map(String::as_str), Some("B"), "a removed bootstrap member keeps its name");
        assert_eq!(names.get(&3).map(String::as_str), Some("D"), "an added member is named by its record");
        assert_eq!(names.get(&9), None);
    }
}
