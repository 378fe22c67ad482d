//! `Node::restore` when the snapshot arrives in the same batch as AppendEntries beyond it (issue 12):
//! the core must never end with `commit > last_index`, must never let an acknowledgement leave that
//! its durable log or snapshot does not cover, and must settle (no endless Readys).
//!
//! The driver here is exact: it executes each Ready in the contract's order and tracks what its
//! "storage" holds, so every acknowledgement that leaves can be checked against it.

use bytes::Bytes;
use raft::{Config, Entry, HardState, Message, MessageBody, Node, NodeId, StorageAction};

/// What the follower's storage holds: the snapshot point and the entries after it.
struct Disk {
    snapshot: (u64, u64),
    entries: Vec<Entry>,
}

impl Disk {
    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.0, |e| e.index)
    }
}

fn follower(stored_terms: &[u64], term: u64) -> (Node, Disk) {
    let mut cfg = Config::new(2, vec![1, 2, 3]);
    cfg.seed = 7;
    let entries: Vec<Entry> =
        stored_terms.iter().enumerate().map(|(k, t)| Entry::new(*t, k as u64 + 1, "x")).collect();
    let node = Node::new(cfg, HardState { term, voted_for: None }, 0, 0, entries.clone(), 0).unwrap();
    (node, Disk { snapshot: (0, 0), entries })
}

fn append(
    from: NodeId,
    term: u64,
    prev: (u64, u64),
    entries: std::ops::RangeInclusive<u64>,
    et: u64,
    lc: u64,
) -> Message {
    Message {
        from,
        to: 2,
        term,
        body: MessageBody::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries.map(|i| Entry::new(et, i, Bytes::from_static(b"y"))).collect(),
            leader_commit: lc,
        },
    }
}

/// Runs Readys until none is left (at most `max_rounds`), executing them against `disk`; returns the
/// successful acknowledgements that left, with the disk's last index at the moment each left.
fn drain(node: &mut Node, disk: &mut Disk, max_rounds: usize) -> Vec<(u64, u64)> {
    let mut acks = Vec::new();
    for _ in 0..max_rounds {
        if !node.has_ready() {
            return acks;
        }
        let rd = node.ready();
        if let Some(from) = rd.truncate_from {
            disk.entries.retain(|e| e.index < from);
        }
        for e in &rd.entries {
            assert_eq!(e.index, disk.last() + 1, "entries reach storage in order, without gaps");
            disk.entries.push(e.clone());
        }
        if let Some(last) = rd.entries.last() {
            node.on_persisted(last.index);
        }
        for m in rd.messages.iter().chain(&rd.log_acks).chain(&rd.early_messages) {
            if let MessageBody::AppendEntriesResponse { success: true, index, .. } = m.body {
                acks.push((index, disk.last()));
            }
        }
        assert!(
            node.commit() <= node.last_index(),
            "commit {} > last index {}",
            node.commit(),
            node.last_index()
        );
    }
    panic!(
        "the node still has work after {max_rounds} Readys: commit {} last {} applied {}",
        node.commit(),
        node.last_index(),
        node.applied()
    );
}

/// Installs a snapshot at (`index`, `term`) the way the driver does: the file is durable first, then
/// the core is told, then storage follows the core's verdict.
fn install(node: &mut Node, disk: &mut Disk, index: u64, term: u64, leader: NodeId) {
    let verdict = node.restore(index, term, leader).expect("the snapshot is accepted");
    disk.snapshot = (index, term);
    if verdict == StorageAction::DropPrefix {
        disk.entries.retain(|e| e.index > index);
    } else {
        disk.entries.clear();
    }
}

#[test]
fn a_snapshot_inside_unstored_entries_keeps_commit_within_the_log_and_settles() {
    let (mut node, mut disk) = follower(&[1, 1, 1, 1, 1], 2);
    // One batch: entries 6..10 of term 2 (leader commit 10) and the last chunk of snapshot 8/2.
    node.step(append(1, 2, (5, 1), 6..=10, 2, 10));
    install(&mut node, &mut disk, 8, 2, 1);
    assert!(
        node.commit() <= node.last_index(),
        "commit {} > last index {}",
        node.commit(),
        node.last_index()
    );
    let acks = drain(&mut node, &mut disk, 100);
    for (index, held) in acks {
        assert!(index <= held, "acknowledged {index} while storage and snapshot hold only up to {held}");
    }
    assert_eq!(node.applied(), node.commit(), "everything committed is handed out for applying");
}

#[test]
fn an_acknowledgement_never_covers_entries_the_snapshot_install_dropped() {
    let (mut node, mut disk) = follower(&[1, 1, 1, 1, 1], 2);
    // Leader commit equals the snapshot's index: the queued "success up to 10" must not leave unless
    // entries 9 and 10 are durable by then.
    node.step(append(1, 2, (5, 1), 6..=10, 2, 8));
    install(&mut node, &mut disk, 8, 2, 1);
    let acks = drain(&mut node, &mut disk, 100);
    assert!(!acks.is_empty(), "the snapshot is acknowledged");
    for (index, held) in acks {
        assert!(index <= held, "acknowledged {index} while storage and snapshot hold only up to {held}");
    }
}

#[test]
fn a_conflicting_log_is_discarded_and_its_queued_acknowledgements_never_leave() {
    let (mut node, mut disk) = follower(&[1, 1, 1, 1, 1], 2);
    // Entries 6..10 of term 2 from the leader of term 2 (acknowledgement queued), then in the same
    // batch node 3 leads term 3 and its snapshot says index 8 has term 3: the log conflicts.
    node.step(append(1, 2, (5, 1), 6..=10, 2, 5));
    node.step(Message {
        from: 3,
        to: 2,
        term: 3,
        body: MessageBody::Heartbeat { leader_commit: 0, read_round: 0 },
    });
    install(&mut node, &mut disk, 8, 3, 3);
    assert_eq!(node.last_index(), 8);
    let acks = drain(&mut node, &mut disk, 100);
    for (index, held) in acks {
        assert!(index <= held, "acknowledged {index} while storage and snapshot hold only up to {held}");
    }
}
