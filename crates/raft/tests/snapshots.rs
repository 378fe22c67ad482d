//! Scenario tests of log compaction and InstallSnapshot (§7) in the core, driven message by message.
//! The harness plays the driver: `compact` stands for "snapshot the state machine, drop the log
//! prefix", `install_snapshot` for "the transfer finished, the follower made it durable".

mod harness;

use harness::Cluster;
use raft::progress::ProgressState;
use raft::{Role, StorageAction};

/// Elects 1, isolates 3, commits `n` writes on 1 and 2, and compacts the leader up to its applied index.
fn lagging_follower(n: usize) -> Cluster {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for k in 0..n {
        c.propose(1, &format!("w{k}"));
        c.settle();
    }
    c.run_ticks(2);
    let applied = c.node(1).applied();
    assert_eq!(applied, n as u64 + 1);
    c.compact(1, applied);
    assert_eq!(c.node(1).first_index(), applied + 1);
    c
}

#[test]
fn a_follower_behind_the_compaction_point_is_sent_a_snapshot_not_entries() {
    let mut c = lagging_follower(10);
    c.heal();
    let mark = c.trace.len();
    // Appends lost during the isolation are presumed lost after an election timeout.
    c.run_ticks(12);
    assert_eq!(c.snapshot_requests, vec![(1, 3)], "exactly one request, however many rounds pass");
    assert_eq!(c.node(1).progress(3).unwrap().state, ProgressState::Snapshot);
    // No AppendEntries with entries goes to 3 while the snapshot is pending.
    let appends_with_entries = c.trace[mark..]
        .iter()
        .filter(|t| t.starts_with("1->3 ") && t.contains("AppendEntries") && !t.contains("entries=[]"))
        .count();
    assert!(appends_with_entries <= 1, "only the first probe may carry entries: {:?}", &c.trace[mark..]);
    assert_eq!(c.node(3).last_index(), 1);

    assert_eq!(
        c.install_snapshot(1, 3),
        Some(StorageAction::Reset),
        "3's log does not hold index 11: discarded"
    );
    assert_eq!(c.node(3).first_index(), 12);
    assert_eq!(c.node(3).commit(), 11);
    assert_eq!(c.node(3).applied(), 11);
    c.propose(1, "after");
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.node(1).progress(3).unwrap().state, ProgressState::Replicate);
    assert_eq!(c.node(3).last_index(), 12);
    assert_eq!(c.node(3).commit(), 12);
    assert_eq!(c.applied[&3].last().unwrap().data, "after");
    assert_eq!(c.applied[&3], c.applied[&1], "the snapshot plus the tail equals the leader's history");
}

#[test]
fn the_followers_acknowledgement_after_install_resumes_replication_even_without_the_drivers_report() {
    let mut c = lagging_follower(5);
    c.heal();
    c.run_ticks(12);
    assert_eq!(c.snapshot_requests, vec![(1, 3)]);
    // Install on 3 without telling the leader's progress (as if the driver's report were lost): the
    // follower's own AppendEntriesResponse must move the leader on.
    let index = c.node(1).applied();
    assert_eq!(c.install_snapshot_with(1, 3, false), Some(StorageAction::Reset));
    assert_eq!(c.node(1).progress(3).unwrap().state, ProgressState::Snapshot);
    c.settle();
    assert_eq!(c.node(1).progress(3).unwrap().match_index, index);
    c.propose(1, "x");
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.node(3).commit(), index + 1);
}

#[test]
fn a_failed_transfer_is_requested_again() {
    let mut c = lagging_follower(5);
    c.heal();
    c.run_ticks(12);
    assert_eq!(c.snapshot_requests.len(), 1);
    c.node_mut(1).snapshot_failed(3);
    c.run_ticks(2);
    assert_eq!(c.snapshot_requests, vec![(1, 3), (1, 3)]);
}

#[test]
fn restore_keeps_the_log_suffix_that_continues_the_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for k in 0..6 {
        c.propose(1, &format!("w{k}"));
    }
    c.settle();
    c.run_ticks(2);
    // 3 holds everything but has applied only what its commit allowed; roll its state machine
    // back by restarting it: it then holds the entries and applies nothing until it hears commit.
    c.crash(3);
    c.restart(3);
    assert_eq!(c.node(3).applied(), 0);
    assert_eq!(c.node(3).last_index(), 7);
    c.compact(1, 4);
    // A snapshot at 7 (leader's applied) matches 3's entry 7: its log suffix (none) is kept.
    assert_eq!(c.install_snapshot(1, 3), Some(StorageAction::DropPrefix));
    assert_eq!(c.node(3).first_index(), 8);
    assert_eq!(c.node(3).applied(), 7);
    assert!(c.stored[&3].entries.is_empty());
}

#[test]
fn restore_discards_a_log_that_conflicts_with_the_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.settle();
    // 1 is partitioned with its writes; 2 and 3 elect 2 and commit different entries.
    c.isolate(1);
    c.propose(1, "lost-a");
    c.propose(1, "lost-b");
    c.settle();
    let leader = c.elect_in_majority(&[2, 3]);
    for k in 0..4 {
        c.propose(leader, &format!("kept{k}"));
    }
    c.settle();
    c.run_ticks(2);
    let index = c.node(leader).applied();
    c.compact(leader, index);
    // Install on 1 directly (it is the deposed leader; now a follower of the new term once healed).
    c.heal();
    c.run_ticks(2);
    assert_ne!(c.node(1).role(), Role::Leader);
    let verdict = c.install_snapshot(leader, 1);
    assert_eq!(
        verdict,
        Some(StorageAction::Reset),
        "1's entry at {index} has another term: its whole log goes"
    );
    assert!(c.node(1).entry(2).is_none());
    c.propose(leader, "after");
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.applied[&1], c.applied[&leader]);
    assert!(!c.applied[&1].iter().any(|e| e.data.starts_with(b"lost")));
}

#[test]
fn restore_is_refused_by_a_leader_and_for_an_index_already_applied() {
    let mut c = lagging_follower(3);
    let applied = c.node(1).applied();
    assert_eq!(c.node_mut(1).restore(applied + 5, 1, 2), None, "a leader never installs a snapshot");
    let a2 = c.node(2).applied();
    let t2 = c.node(2).entry_term(a2).unwrap();
    assert_eq!(c.node_mut(2).restore(a2, t2, 1), None, "nothing new: refused");
    assert_eq!(c.node(2).applied(), a2);
}

#[test]
fn a_restarted_node_starts_from_its_snapshot_and_log_tail() {
    let mut c = lagging_follower(8);
    c.heal();
    c.run_ticks(12);
    assert_eq!(c.install_snapshot(1, 3), Some(StorageAction::Reset));
    c.propose(1, "tail");
    c.settle();
    c.run_ticks(2);
    for id in [1, 3] {
        c.crash(id);
        c.restart(id);
        assert_eq!(c.node(id).first_index(), c.stored[&id].snapshot.0 + 1);
        assert_eq!(c.node(id).applied(), c.stored[&id].snapshot.0);
    }
    c.run_ticks(30);
    let leader = c.leaders()[0];
    c.propose(leader, "again");
    c.settle();
    c.run_ticks(2);
    for id in 1..=3 {
        assert_eq!(c.applied[&id].last().unwrap().data, "again", "node {id}");
    }
}
