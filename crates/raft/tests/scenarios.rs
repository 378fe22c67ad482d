//! Scenario tests of the Raft core, driven message by message. Each is named after the rule it checks.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use raft::{MessageBody, ReadError, Role};

#[test]
fn first_election_elects_one_leader_with_prevote() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), 1, "PreVote must not bump the term before winning");
    for id in [2, 3] {
        assert_eq!(c.node(id).leader(), Some(1));
        assert_eq!(c.node(id).term(), 1);
    }
    // The new leader's no-op is committed and applied everywhere.
    assert_eq!(c.node(1).commit(), 1);
    c.run_ticks(3);
    for id in 1..=3 {
        assert_eq!(c.applied[&id].len(), 1);
        assert!(c.applied[&id][0].is_noop());
    }
}

#[test]
fn votes_are_persisted_before_the_answer_is_sent() {
    let mut c = Cluster::new(3);
    c.tick(1);
    for _ in 0..100 {
        c.tick(1);
        if c.node(1).role() != Role::Follower {
            break;
        }
    }
    c.flush();
    while c.deliver_one() {} // PreVotes reach 2 and 3
    c.flush();
    while c.deliver_one() {} // PreVoteResponses reach 1 -> candidate
    c.flush(); // RequestVotes queued
    while c.deliver_one() {}
    // Nodes 2 and 3 granted their votes: the Ready that carries the answer also carries the vote.
    let rd = c.node_mut(2).ready();
    let granted =
        rd.messages.iter().any(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true }));
    assert!(granted);
    assert_eq!(rd.hard_state.map(|h| h.voted_for), Some(Some(1)));
}

#[test]
fn election_restriction_rejects_candidates_with_stale_logs() {
    // Node 1's log is longer but its last term is older than the others'.
    let mut c = Cluster::with_logs(3, vec![(2, vec![1, 1, 1]), (2, vec![1, 2]), (2, vec![1, 2])], |_| {});
    c.elect(1);
    assert!(c.leaders().is_empty(), "node 1 must get no vote: its last term 1 is older than 2");
    assert_eq!(c.node(2).voted_for(), None);
    c.elect(2);
    assert_eq!(c.leaders(), vec![2]);
    c.run_ticks(2);
    for id in 1..=3 {
        assert_eq!(c.log_terms(id), vec![1, 2, 3], "node 1's uncommitted entries are replaced");
    }
}

#[test]
fn figure7_follower_logs_converge_to_the_leaders() {
    // Paper Figure 7: leader of term 8 and followers (a)-(f) with missing and extra entries.
    let logs = vec![
        (7, vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),       // leader
        (7, vec![1, 1, 1, 4, 4, 5, 5, 6, 6]),          // (a)
        (7, vec![1, 1, 1, 4]),                         // (b)
        (7, vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),    // (c)
        (7, vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]), // (d)
        (7, vec![1, 1, 1, 4, 4, 4, 4]),                // (e)
        (7, vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),    // (f)
    ];
    let mut c = Cluster::with_logs(7, logs, |_| {});
    c.elect(1);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), 8);
    c.run_ticks(4);
    let expected = vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8];
    for id in 1..=7 {
        assert_eq!(c.log_terms(id), expected, "node {id}");
        assert_eq!(c.stored_terms(id), expected, "node {id} storage");
        assert_eq!(c.node(id).commit(), 11, "node {id}");
    }
}

#[test]
fn fast_backtracking_skips_a_term_per_round_trip() {
    // Follower (f) of Figure 7 diverges for 8 entries over 2 terms; one round trip per term, not per entry.
    let logs = vec![
        (7, vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),
        (7, vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
        (7, vec![1]),
    ];
    let mut c = Cluster::with_logs(3, logs, |_| {});
    c.elect(1);
    c.run_ticks(2);
    assert_eq!(c.log_terms(2), vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
    let rejects = c.trace.iter().filter(|l| l.starts_with("2->1") && l.contains("reject")).count();
    assert!(rejects <= 3, "{rejects} rejections:\n{}", c.trace.join("\n"));
}

#[test]
fn figure8_leader_does_not_commit_entries_of_earlier_terms_by_counting() {
    // One entry per message, so the old-term entry can reach a majority before the new no-op does.
    // CheckQuorum's leases are off so the scripted elections need no waiting.
    let mut c = Cluster::with_config(5, |cfg| {
        cfg.max_entries_per_message = 1;
        cfg.check_quorum = false;
    });
    // (a) S1 leads term 1 (after its no-op, index 1), writes index 2 that only S2 gets.
    c.elect(1);
    c.run_ticks(1);
    c.partition(&[1, 2]);
    c.propose(1, "x");
    c.settle();
    assert_eq!(c.log_terms(2), vec![1, 1]);
    // (b) S1 crashes; S5 wins term 2 with S3, S4 and appends its no-op at index 2, which only S5 stores.
    c.crash(1);
    c.heal();
    c.partition(&[3, 4, 5]);
    assert!(c.win(5));
    c.flush();
    c.queue.clear();
    assert_eq!(c.stored_terms(5), vec![1, 2]);
    let s5_term = c.node(5).term();
    // S5 crashes before replicating; S1 restarts and wins the next term with S2, S3, S4.
    c.crash(5);
    c.heal();
    c.cut.insert((5, 1));
    c.restart(1);
    // S1 must ask for votes: node 5 is down, 3 and 4 have term-1 logs of length 1 -> S1 is up to date.
    // Its first pre-campaign (for term 2) is refused and teaches it term 2; the next one succeeds.
    assert!(!c.win(1));
    assert_eq!(c.node(1).term(), s5_term);
    assert!(c.win(1));
    c.queue.clear();
    let t = c.node(1).term();
    assert!(t > s5_term);
    // Let S1 replicate to S2 and S3, but keep the no-op (index 3) from S3: index 2 (term 1) is then on
    // a majority (S1, S2, S3) and index 3 on a minority (S1, S2).
    for _ in 0..20 {
        c.flush();
        while let Some(m) = c.queue.pop_front() {
            // (S3's first probe, prev=2, carries the no-op too, but S3 rejects it: it lacks index 2.)
            let gives_noop = matches!(&m.body, MessageBody::AppendEntries { prev_log_index: 2, .. })
                && c.node(3).last_index() >= 2;
            if !(gives_noop && m.to == 3) && [1, 2, 3].contains(&m.from) && [1, 2, 3].contains(&m.to) {
                c.node_mut(m.to).step(m);
            }
        }
    }
    assert_eq!(c.node(1).progress(2).map(|p| p.match_index), Some(3));
    assert_eq!(c.node(1).progress(3).map(|p| p.match_index), Some(2));
    // Index 2 (term 1) is now on S1, S2, S3: a majority, but not of S1's term.
    for id in [1, 2, 3] {
        assert_eq!(c.node(id).entry_term(2), Some(1), "node {id}");
    }
    assert!(c.node(1).commit() < 2, "Figure 8: must not commit an old-term entry by counting replicas");
    c.flush();
    c.queue.clear();
    // (d) S1 crashes, S5 comes back and wins (its last term beats theirs): it overwrites index 2.
    c.crash(1);
    c.restart(5);
    c.elect(5);
    assert_eq!(c.leaders(), vec![5]);
    c.run_ticks(3);
    for id in [2, 3, 4, 5] {
        assert_eq!(c.node(id).entry_term(2), Some(s5_term), "node {id}");
    }
    for id in 1..=5 {
        assert!(c.applied[&id].iter().all(|e| e.data != Bytes::from_static(b"x")), "x was never committed");
    }
}

#[test]
fn figure8_old_entries_commit_with_the_leaders_own_entry() {
    let logs = vec![(3, vec![1, 2]), (3, vec![1, 2]), (3, vec![1])];
    let mut c = Cluster::with_logs(3, logs, |_| {});
    c.elect(1);
    assert_eq!(c.node(1).term(), 4);
    c.run_ticks(2);
    for id in 1..=3 {
        assert_eq!(c.node(id).commit(), 3);
        assert_eq!(c.applied[&id].len(), 3);
    }
}

#[test]
fn split_vote_elects_nobody_then_a_later_term_elects_one() {
    let mut c = Cluster::with_config(4, |cfg| cfg.pre_vote = false);
    // 1 and 2 time out together; 3 hears 1 first, 4 hears 2 first.
    for _ in 0..100 {
        for id in [1, 2] {
            if c.node(id).role() == Role::Follower {
                c.tick(id);
            }
        }
        if c.node(1).role() == Role::Candidate && c.node(2).role() == Role::Candidate {
            break;
        }
    }
    c.flush();
    let mut msgs: Vec<_> = c.queue.drain(..).collect();
    msgs.sort_by_key(|m| (m.from == 1 && m.to == 4) || (m.from == 2 && m.to == 3));
    c.queue.extend(msgs);
    c.settle();
    assert!(c.leaders().is_empty(), "a 2-2 split vote must elect nobody");
    assert_eq!(c.node(1).term(), c.node(2).term());
    c.run_ticks(200);
    assert_eq!(c.leaders().len(), 1);
    assert!(c.node(c.leaders()[0]).term() > 1);
}

#[test]
fn deposed_leader_in_minority_partition_cannot_commit_and_its_writes_are_overwritten() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.run_ticks(1);
    c.partition(&[1, 2]);
    let stale = c.propose(1, "lost");
    c.settle();
    let new = c.elect_in_majority(&[3, 4, 5]);
    let index = c.propose(new, "kept");
    c.settle();
    c.run_ticks(1);
    assert!(c.node(new).commit() >= index);
    assert!(c.node(1).commit() < stale, "minority leader must not commit");
    // CheckQuorum: the old leader steps down on its own within an election timeout.
    c.run_ticks(25);
    assert_ne!(c.node(1).role(), Role::Leader);
    c.heal();
    c.run_ticks(5);
    assert_eq!(c.leaders(), vec![new]);
    let expected = c.log_terms(new);
    for id in 1..=5 {
        assert_eq!(c.log_terms(id), expected);
        assert!(c.applied[&id].iter().all(|e| e.data != Bytes::from_static(b"lost")));
        assert!(c.applied[&id].iter().any(|e| e.data == Bytes::from_static(b"kept")));
    }
}

#[test]
fn prevote_keeps_a_rejoining_node_from_disrupting_a_healthy_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.run_ticks(100);
    assert_eq!(c.node(3).term(), 1, "an isolated node must not inflate its term");
    c.heal();
    c.run_ticks(30);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), 1);
    assert_eq!(c.node(3).leader(), Some(1));
}

#[test]
fn without_prevote_a_rejoining_node_does_disrupt() {
    // The contrast that shows the PreVote test can fail.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.elect(1);
    c.isolate(3);
    c.run_ticks(100);
    assert!(c.node(3).term() > 1);
    c.heal();
    c.run_ticks(30);
    assert!(c.node(1).term() > 1, "the rejoining node's term deposes the leader");
}

#[test]
fn checkquorum_makes_a_leader_that_lost_its_majority_step_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.run_ticks(9);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.run_ticks(12);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).leader(), None);
}

#[test]
fn reads_are_never_served_by_a_stale_leader() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.run_ticks(1);
    c.partition(&[1, 2]);
    let new = c.elect_in_majority(&[3, 4, 5]);
    c.propose(new, "new");
    c.settle();
    // Node 1 still believes it leads; a read there cannot gather a majority.
    assert_eq!(c.node(1).role(), Role::Leader);
    c.node_mut(1).read(7);
    c.settle();
    assert!(c.reads.get(&1).is_none_or(|r| r.is_empty()), "stale leader answered a read");
    // When it steps down (CheckQuorum) the read fails instead of being served.
    c.run_ticks(25);
    let reads = &c.reads[&1];
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].id, 7);
    assert_eq!(reads[0].result, Err(ReadError::LeadershipChanged));
}

#[test]
fn read_index_waits_for_the_new_leaders_first_commit() {
    let mut c = Cluster::new(3);
    // Node 1 wins; then its outbound links are cut: its no-op stays uncommitted.
    assert!(c.win(1));
    c.cut.insert((1, 2));
    c.cut.insert((1, 3));
    c.node_mut(1).read(9);
    c.settle();
    assert_eq!(c.node(1).commit(), 0);
    assert!(
        c.reads.get(&1).is_none_or(|r| r.is_empty()),
        "read served before the leader committed in its term"
    );
    c.heal();
    c.run_ticks(3);
    assert_eq!(c.reads[&1], vec![raft::ReadState { id: 9, result: Ok(1) }]);
}

#[test]
fn one_heartbeat_round_confirms_many_concurrent_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "w");
    c.settle();
    let commit = c.node(1).commit();
    for id in 0..100 {
        c.node_mut(1).read(id);
    }
    let before = c.trace.len();
    c.settle();
    let reads = &c.reads[&1];
    assert_eq!(reads.len(), 100);
    assert!(reads.iter().all(|r| r.result == Ok(commit)), "{reads:?}");
    let heartbeats = c.trace[before..].iter().filter(|l| l.contains(" Heartbeat ")).count();
    assert_eq!(heartbeats, 2, "one heartbeat round (to 2 followers) for 100 reads");
}

#[test]
fn read_round_is_retried_by_the_periodic_heartbeat_after_loss() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.cut.insert((1, 2));
    c.cut.insert((1, 3));
    c.node_mut(1).read(1);
    c.settle();
    assert!(c.reads.get(&1).is_none_or(|r| r.is_empty()));
    c.heal();
    c.run_ticks(2);
    assert_eq!(c.reads[&1].len(), 1);
    assert!(c.reads[&1][0].result.is_ok());
}

#[test]
fn follower_reads_go_through_the_leaders_read_index() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let idx = c.propose(1, "a");
    c.settle();
    c.node_mut(2).read(42);
    c.settle();
    let r = &c.reads[&2];
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].result, Ok(idx));
    assert!(c.node(2).commit() >= idx, "the read round tells the follower the commit index");
}

#[test]
fn a_followers_reads_between_two_flushes_share_one_read_index_message() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let idx = c.propose(1, "a");
    c.settle();
    for id in 10..60 {
        c.node_mut(2).read(id);
    }
    let before = c.trace.len();
    c.settle();
    let asked = c.trace[before..].iter().filter(|l| l.contains(" ReadIndex ")).count();
    let answered = c.trace[before..].iter().filter(|l| l.contains(" ReadIndexResponse ")).count();
    assert_eq!(
        (asked, answered),
        (1, 1),
        "one request and one answer for 50 reads: {:?}",
        &c.trace[before..]
    );
    let reads = &c.reads[&2];
    assert_eq!(reads.iter().map(|r| r.id).collect::<Vec<_>>(), (10..60).collect::<Vec<_>>());
    assert!(reads.iter().all(|r| r.result == Ok(idx)), "{reads:?}");
    // Reads after that flush form a group of their own, answered at the index of their time.
    let later = c.propose(1, "b");
    c.settle();
    c.node_mut(2).read(60);
    c.settle();
    assert_eq!(c.reads[&2].last(), Some(&raft::ReadState { id: 60, result: Ok(later) }));
}

#[test]
fn a_lost_read_index_answer_fails_every_read_of_its_group() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.settle();
    c.cut.insert((1, 2));
    for id in [5, 6, 7] {
        c.node_mut(2).read(id);
    }
    c.settle();
    assert!(c.reads.get(&2).is_none_or(|r| r.is_empty()));
    // Node 2 hears from nobody now: its group times out (and it may start an election, which
    // also fails forwarded reads); each read is answered exactly once, with an error.
    for _ in 0..30 {
        c.tick(2);
        c.flush();
    }
    let reads = &c.reads[&2];
    assert_eq!(reads.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 6, 7], "{reads:?}");
    assert!(reads.iter().all(|r| r.result.is_err()), "{reads:?}");
}

#[test]
fn reads_not_yet_sent_fail_when_the_follower_loses_its_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.settle();
    c.node_mut(2).read(1);
    // Before its flush, node 2 times out and becomes a candidate: no leader to send the read to.
    for _ in 0..40 {
        if c.node(2).role() != Role::Follower {
            break;
        }
        c.tick(2);
    }
    assert_ne!(c.node(2).role(), Role::Follower);
    c.flush();
    let reads = &c.reads[&2];
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(reads[0].result.is_err(), "{reads:?}");
}

#[test]
fn a_read_with_no_known_leader_fails_at_once() {
    let mut c = Cluster::new(3);
    c.node_mut(2).read(1);
    c.flush();
    assert_eq!(c.reads[&2][0].result, Err(ReadError::NoLeader));
}

#[test]
fn restart_from_durable_state_alone_keeps_every_committed_entry() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..20 {
        c.propose(1, &format!("v{i}"));
        c.settle();
    }
    c.run_ticks(2);
    let committed = c.node(1).commit();
    let log = c.log_terms(1);
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        c.restart(id);
        assert_eq!(c.node(id).commit(), 0, "commit is volatile");
    }
    c.run_ticks(60);
    let leader = c.leaders()[0];
    assert!(c.node(leader).commit() > committed);
    for id in 1..=3 {
        assert_eq!(&c.log_terms(id)[..log.len()], &log[..]);
        let values: Vec<_> = c.applied[&id].iter().filter(|e| !e.is_noop()).map(|e| e.data.clone()).collect();
        assert_eq!(values.len(), 20);
    }
}

#[test]
fn pipelining_sends_several_batches_without_waiting() {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.max_entries_per_message = 2;
        cfg.max_inflight_messages = 4;
    });
    c.elect(1);
    c.run_ticks(1);
    for i in 0..20 {
        c.propose(1, &format!("{i}"));
    }
    c.flush();
    let to2 =
        c.queue.iter().filter(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. })).count();
    assert_eq!(to2, 4, "window of 4 messages in flight");
    c.settle();
    c.run_ticks(1);
    assert_eq!(c.node(2).last_index(), c.node(1).last_index());
}

#[test]
fn a_single_node_cluster_commits_alone() {
    let mut c = Cluster::new(1);
    c.run_ticks(30);
    assert_eq!(c.leaders(), vec![1]);
    let i = c.propose(1, "solo");
    c.node_mut(1).read(5);
    c.settle();
    assert_eq!(c.node(1).commit(), i);
    // The read came before the write was durable (hence committed): its index is the earlier commit.
    assert_eq!(c.reads[&1][0].result, Ok(i - 1));
}

#[test]
fn golden_trace_of_an_election_and_one_write() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x");
    c.settle();
    c.run_ticks(2);
    let got = c.trace.join("\n") + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/election_and_write.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(got, want, "trace differs from {path} (UPDATE_GOLDEN=1 rewrites it after review)");
}

#[test]
fn a_leader_counts_its_own_log_only_as_far_as_it_is_persisted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run_ticks(1);
    let index = c.propose(1, "x");
    // The leader's Ready: its appends may leave before its own fsync.
    let rd = c.node_mut(1).ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(index));
    let to2: Vec<_> = rd.early_messages.into_iter().filter(|m| m.to == 2).collect();
    assert!(!to2.is_empty(), "appends go out before the leader persists");
    for m in to2 {
        c.node_mut(2).step(m);
    }
    let acks = c.node_mut(2).ready();
    for m in acks.early_messages.into_iter().chain(acks.messages).chain(acks.log_acks) {
        c.node_mut(1).step(m);
    }
    // Node 2 holds the entry, node 1 has not persisted it: no majority yet.
    assert!(c.node(1).commit() < index, "counted the leader's unpersisted entry");
    c.node_mut(1).on_persisted(index);
    assert_eq!(c.node(1).commit(), index);
}
