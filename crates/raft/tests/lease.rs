//! Lease reads (thesis §6.4.1): served without a round while the lease holds, never after it
//! expired, never across a leadership transfer or a membership change.

mod harness;

use harness::Cluster;
use raft::{ConfChange, ReadMode, ReadState, Role};

fn lease_cluster(n: u64) -> Cluster {
    let mut c = Cluster::with_config(n, |cfg| {
        cfg.read_mode = ReadMode::Lease;
        cfg.lease_drift_ticks = 2;
    });
    // Everyone ticks: in lease mode a node that just started refuses votes for an election timeout.
    for _ in 0..200 {
        c.run_ticks(1);
        if c.leaders().len() == 1 && c.node(c.leaders()[0]).commit() > 0 {
            break;
        }
    }
    c
}

fn leader(c: &Cluster) -> u64 {
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "one leader");
    leaders[0]
}

/// Ticks until the leader's next heartbeat round was answered.
fn renew(c: &mut Cluster) {
    let heartbeat = c.node(leader(c)).config().heartbeat_ticks;
    c.run_ticks(heartbeat as usize);
}

#[test]
fn a_leader_with_a_lease_serves_reads_without_a_round() {
    let mut c = lease_cluster(3);
    let l = leader(&c);
    renew(&mut c);
    assert!(c.node(l).has_lease());
    let commit = c.node(l).commit();
    let before = c.trace.len();
    c.node_mut(l).read(7);
    c.flush();
    assert_eq!(c.reads[&l], vec![ReadState { id: 7, result: Ok(commit) }]);
    assert_eq!(c.trace.len(), before, "no message for a lease read");
    // A follower's read index is answered at once too.
    let f = if l == 1 { 2 } else { 1 };
    c.node_mut(f).read(8);
    c.settle();
    assert_eq!(c.reads[&f], vec![ReadState { id: 8, result: Ok(commit) }]);
    assert!(!c.trace[before..].iter().any(|l| l.contains(" Heartbeat ")), "{:?}", &c.trace[before..]);
}

#[test]
fn the_lease_ends_election_timeout_minus_drift_after_the_heartbeats_were_sent() {
    let mut c = lease_cluster(3);
    let l = leader(&c);
    renew(&mut c);
    c.isolate(l);
    let cfg = c.node(l).config().clone();
    // The last answered round was sent at most a heartbeat interval ago.
    let lease = (cfg.election_ticks - cfg.lease_drift_ticks) as usize;
    for _ in 0..lease {
        c.tick(l);
        c.settle();
    }
    assert!(!c.node(l).has_lease(), "lease outlived election timeout minus drift");
    c.node_mut(l).read(1);
    c.settle();
    assert!(c.reads.get(&l).is_none_or(|r| r.is_empty()), "served a read without a lease");
}

#[test]
fn a_cut_off_leader_serves_no_stale_read_while_a_new_leader_commits() {
    let mut c = lease_cluster(5);
    let l = leader(&c);
    renew(&mut c);
    let others: Vec<u64> = (1..=5).filter(|&id| id != l).collect();
    let mut side = vec![l];
    side.push(others[0]);
    c.partition(&side);
    let new = c.elect_in_majority(&others[1..]);
    c.propose(new, "new");
    c.settle();
    assert_eq!(c.node(l).role(), Role::Leader, "the old leader has not noticed yet");
    c.node_mut(l).read(5);
    c.settle();
    assert!(c.reads.get(&l).is_none_or(|r| r.is_empty()), "stale leader served a read");
}

#[test]
fn a_transfer_ends_the_lease_for_the_rest_of_the_leadership() {
    let mut c = lease_cluster(3);
    let l = leader(&c);
    renew(&mut c);
    assert!(c.node(l).has_lease());
    let target = if l == 1 { 2 } else { 1 };
    // The target never gets TimeoutNow: the transfer is abandoned after an election timeout.
    c.drop_kinds.insert("TimeoutNow");
    c.node_mut(l).transfer_leader(target).unwrap();
    assert!(!c.node(l).has_lease());
    let election = c.node(l).config().election_ticks as usize;
    c.run_ticks(election + 2);
    assert_eq!(leader(&c), l);
    assert_eq!(c.node(l).transferring_to(), None, "abandoned");
    assert!(!c.node(l).has_lease(), "a late TimeoutNow could still elect the target");
    // Reads go through ReadIndex rounds instead.
    c.node_mut(l).read(3);
    c.settle();
    assert_eq!(c.reads[&l].len(), 1);
}

#[test]
fn a_membership_change_ends_the_lease_until_a_new_round_is_answered() {
    let mut c = lease_cluster(3);
    let l = leader(&c);
    renew(&mut c);
    assert!(c.node(l).has_lease());
    c.add_node(4);
    c.change(l, ConfChange::AddLearner { id: 4, context: bytes::Bytes::new() }).unwrap();
    assert!(!c.node(l).has_lease(), "the lease survived a configuration change");
    c.settle();
    renew(&mut c);
    assert!(c.node(l).has_lease(), "rounds after the change give a new lease");
}

#[test]
fn read_index_mode_never_uses_a_lease() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run_ticks(5);
    assert!(!c.node(1).has_lease());
}
