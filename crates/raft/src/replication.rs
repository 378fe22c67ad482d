//! Log replication (paper §5.3, §5.4.2): AppendEntries, heartbeats and the commit rule.
//!
//! - Leader: per follower, probe one AppendEntries at a time until the logs match, then stream
//!   batches with up to `max_inflight_messages` in flight (see [`crate::progress`]). A rejection
//!   carries a hint (the conflicting term and its first index) so the leader skips a whole term per
//!   round trip instead of one entry.
//! - Commit: the leader's commit index is the highest index stored on a majority of the voters of
//!   its latest configuration (its own log counts up to what the driver reported durable, so its
//!   fsync overlaps the followers', and only if the leader is a voter; learners never count), and
//!   only if that entry is of the leader's current term (Figure 8); earlier entries commit with it.
//! - Configuration entries take effect when appended, on the leader and on followers, and a
//!   truncated one is forgotten ([`crate::membership`]). A leader that is not a voter of its
//!   latest configuration steps down once that configuration is committed (thesis §4.2.2).
//! - Follower: AppendEntries is accepted only if its log holds `prev_log_index` with `prev_log_term`
//!   (Log Matching); conflicting entries are truncated, never committed ones.
//! - Heartbeats carry `min(commit, follower's match index)`, which the follower is known to hold, so
//!   they can commit without a log check and can be sent while appends are in flight.
//! - A follower whose next entry was compacted away gets a snapshot instead (§7): the leader asks
//!   its driver to send one ([`crate::Ready::snapshots`]) and pauses appends to that follower until
//!   the driver reports the outcome or the follower acknowledges the snapshot's index.

use crate::message::MessageBody;
use crate::node::{Node, Role};
use crate::types::{Entry, Index, NodeId, Term};

impl Node {
    /// Follower: handles AppendEntries from the leader of the current term.
    pub(crate) fn handle_append_entries(
        &mut self,
        from: NodeId,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: &[Entry],
        leader_commit: Index,
    ) {
        // Everything up to our commit index already matches the leader: skip it.
        let commit = self.log.commit();
        if prev_index < commit {
            let skip = (commit - prev_index) as usize;
            if skip >= entries.len() {
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        index: commit,
                        conflict_term: 0,
                        conflict_index: 0,
                    },
                );
                return;
            }
            prev_index = commit;
            prev_term = entries[skip - 1].term;
            entries = &entries[skip..];
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Some((last_new, truncated)) => {
                if let Some(from) = truncated {
                    // Acknowledgements queued for the entries just replaced must not leave.
                    self.drop_acks_beyond(from - 1);
                }
                self.configs_appended(entries);
                self.log.commit_to(leader_commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        index: last_new,
                        conflict_term: 0,
                        conflict_index: 0,
                    },
                );
            }
            None => {
                let (conflict_term, conflict_index) = if prev_index > self.log.last_index() {
                    (0, self.log.last_index() + 1)
                } else {
                    let term = self.log.term(prev_index).unwrap_or(0);
                    (term, self.log.first_index_of_term_at(prev_index))
                };
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        index: prev_index,
                        conflict_term,
                        conflict_index,
                    },
                );
            }
        }
    }

    /// Leader: handles a follower's answer to AppendEntries.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        conflict_term: Term,
        conflict_index: Index,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let hint = if conflict_term == 0 {
            conflict_index
        } else {
            self.log.last_index_of_term(conflict_term).map_or(conflict_index, |i| i + 1)
        };
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if success {
            if pr.acknowledge(index.min(last)) {
                self.maybe_commit();
                self.transfer_progressed(from);
            }
        } else {
            pr.reject(index, hint.max(1));
        }
    }

    /// Leader: handles a follower's answer to a heartbeat.
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        // A lost probe (or its answer) must not stall a follower forever: the heartbeat round trip
        // shows it is reachable, so allow another probe.
        pr.probe_sent = false;
        pr.read_round = pr.read_round.max(read_round);
        self.extend_lease();
        self.advance_reads();
    }

    /// Leader: raises the commit index to the highest index of the current term stored on a
    /// majority of the voters.
    pub(crate) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        // The leader's own log counts only as far as it is durable.
        let own = self.persisted.min(self.log.last_index());
        let progress = &self.progress;
        let quorum_index = self.configs.latest().membership.committed_index(|id| {
            if id == me {
                own
            } else {
                progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        if quorum_index > self.log.commit() && self.log.term(quorum_index) == Some(self.term) {
            self.log.commit_to(quorum_index);
            self.commit_dirty = true;
            self.release_reads_waiting_for_commit();
            self.leader_committed();
        }
    }

    /// Leader: sends every follower what it lacks (batched: everything proposed since the last
    /// flush goes out together), and the new commit index if it changed.
    pub(crate) fn flush_appends(&mut self) {
        let commit_dirty = std::mem::take(&mut self.commit_dirty);
        for peer in self.peers.clone() {
            let mut allow_empty = commit_dirty;
            while self.send_append(peer, allow_empty) {
                allow_empty = false;
            }
        }
    }

    /// Leader: sends one AppendEntries to `peer` if its progress allows and there is something to
    /// send (or `allow_empty`). Returns true if a message was sent.
    fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let max_inflight = self.config.max_inflight_messages;
        let Some(pr) = self.progress.get(&peer) else { return false };
        if pr.is_paused(max_inflight) {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // Compacted away: only a snapshot can bring this follower up to date.
            if let Some(pr) = self.progress.get_mut(&peer) {
                pr.need_snapshot();
            }
            self.snapshot_requests.push(peer);
            return false;
        };
        let entries = self.log.slice(
            pr.next_index,
            self.log.last_index(),
            self.config.max_entries_per_message,
            self.config.max_bytes_per_message,
        );
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = prev_index + entries.len() as u64;
        let now = self.ticks;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.sent(last, now);
        }
        let leader_commit = self.log.commit();
        self.send(
            peer,
            MessageBody::AppendEntries {
                prev_log_index: prev_index,
                prev_log_term: prev_term,
                entries,
                leader_commit,
            },
        );
        true
    }

    /// Leader: sends a heartbeat to every follower, carrying the current read round.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let read_round = self.reads.round;
        let commit = self.log.commit();
        let targets: Vec<(NodeId, Index)> =
            self.progress.iter().map(|(&p, pr)| (p, pr.match_index.min(commit))).collect();
        for (peer, leader_commit) in targets {
            self.send(peer, MessageBody::Heartbeat { leader_commit, read_round });
        }
        self.lease_round_sent();
    }
}
