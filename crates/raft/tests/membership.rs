//! Scenario tests of membership changes (thesis ch. 4) and leadership transfer (thesis §3.10),
//! driven message by message. Each is named after the rule it checks.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use raft::{ConfChange, ConfChangeError, MessageBody, ProposeError, Role, TransferError};

fn add(id: u64) -> ConfChange {
    ConfChange::AddLearner { id, context: Bytes::from(format!("node-{id}")) }
}

/// A 3-node cluster led by 1, with node 4 added as a learner and caught up.
fn with_learner() -> Cluster {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_node(4);
    let index = c.change(1, add(4)).unwrap();
    c.settle();
    c.run_ticks(3);
    assert_eq!(c.node(1).commit(), index);
    assert_eq!(c.node(4).commit(), index, "the learner receives the log and the commit index");
    c
}

#[test]
fn a_learner_receives_the_log_but_is_never_counted() {
    let mut c = with_learner();
    assert_eq!(c.node(1).membership().learners(), vec![4]);
    assert_eq!(c.node(4).membership().voters(), vec![1, 2, 3], "the learner learned the membership");
    assert!(!c.node(4).is_voter());
    c.propose(1, "x");
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.applied[&4].last().unwrap().data, "x");
    // Cut off both voting followers: leader + learner are 2 of 4 nodes, but only 1 of 3 voters.
    c.isolate(2);
    c.isolate(3);
    let before = c.node(1).commit();
    let index = c.propose(1, "y");
    c.settle();
    c.run_ticks(3);
    assert_eq!(c.node(4).last_index(), index, "the learner holds the entry");
    assert_eq!(c.node(1).commit(), before, "a learner's acknowledgement never commits");
    // ReadIndex: the learner's heartbeat answers do not confirm leadership either.
    c.node_mut(1).read(7);
    c.run_ticks(3);
    assert!(c.reads.get(&1).is_none_or(|r| r.iter().all(|r| r.id != 7)), "read confirmed without a majority");
    // CheckQuorum: the leader steps down although the learner answers.
    c.run_ticks(25);
    assert_ne!(c.node(1).role(), Role::Leader);
}

#[test]
fn a_learner_never_campaigns() {
    let mut c = with_learner();
    c.isolate(4);
    let term = c.node(4).term();
    for _ in 0..200 {
        c.tick(4);
        c.settle();
    }
    assert_eq!(c.node(4).role(), Role::Follower);
    assert_eq!(c.node(4).term(), term);
    assert!(
        !c.trace.iter().any(|t| t.starts_with("4->") && t.contains("Vote")),
        "the learner sent a vote request"
    );
}

#[test]
fn a_node_waiting_to_be_added_never_campaigns_and_takes_up_the_membership_it_is_sent() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_node(4);
    for _ in 0..200 {
        c.tick(4);
    }
    c.settle();
    assert_eq!(c.node(4).term(), 0);
    assert!(c.node(4).membership().is_empty());
    c.change(1, add(4)).unwrap();
    c.settle();
    assert_eq!(c.node(4).membership().voters(), vec![1, 2, 3]);
    assert_eq!(c.node(4).membership().learners(), vec![4]);
    assert_eq!(c.node(4).membership().get(4).unwrap().context, "node-4");
}

#[test]
fn a_promotion_waits_for_the_learner_to_catch_up_and_then_the_quorum_is_three_of_four() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_promote_lag = 10);
    c.elect(1);
    c.add_node(4);
    c.change(1, add(4)).unwrap();
    c.run_ticks(3);
    c.isolate(4);
    for k in 0..30 {
        c.propose(1, &format!("w{k}"));
    }
    c.settle();
    let err = c.change(1, ConfChange::Promote { id: 4 }).unwrap_err();
    assert!(matches!(err, ConfChangeError::LearnerBehind { id: 4, .. }), "{err:?}");
    c.heal();
    // The appends lost while 4 was cut off are presumed lost after an election timeout.
    c.run_ticks(12);
    let index = c.change(1, ConfChange::Promote { id: 4 }).unwrap();
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.node(1).commit(), index);
    assert_eq!(c.node(1).membership().voters(), vec![1, 2, 3, 4]);
    // 3 of 4 voters are needed now: {1, 4} cannot commit, {1, 2, 4} can.
    c.isolate(2);
    c.isolate(3);
    let w = c.propose(1, "needs three");
    c.run_ticks(3);
    assert!(c.node(1).commit() < w);
    c.heal();
    c.isolate(3);
    c.run_ticks(12);
    assert_eq!(c.leaders(), vec![1]);
    assert!(c.node(1).commit() >= w);
}

#[test]
fn one_change_at_a_time_and_only_after_the_leader_committed_in_its_term() {
    let mut c = Cluster::new(3);
    assert!(c.win(1));
    assert_eq!(c.change(1, add(4)), Err(ConfChangeError::LeaderNotReady), "the no-op is not committed yet");
    c.settle();
    c.add_node(4);
    c.add_node(5);
    let first = c.change(1, add(4)).unwrap();
    assert_eq!(c.change(1, add(5)), Err(ConfChangeError::ChangeInFlight { index: first }));
    assert_eq!(c.change(2, add(5)), Err(ConfChangeError::NotLeader { leader: Some(1) }));
    c.settle();
    c.run_ticks(2);
    c.change(1, add(5)).unwrap();
    assert_eq!(c.change(1, add(5)).unwrap_err(), ConfChangeError::ChangeInFlight { index: first + 1 });
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.change(1, add(5)), Err(ConfChangeError::AlreadyMember { id: 5 }));
    assert_eq!(c.change(1, ConfChange::Promote { id: 9 }), Err(ConfChangeError::NotAMember { id: 9 }));
    assert_eq!(c.change(1, ConfChange::Promote { id: 2 }), Err(ConfChangeError::AlreadyVoter { id: 2 }));
}

#[test]
fn a_removed_follower_learns_of_its_removal_and_stops_campaigning() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let index = c.change(1, ConfChange::Remove { id: 3 }).unwrap();
    c.settle();
    c.run_ticks(3);
    assert_eq!(c.node(1).commit(), index);
    assert_eq!(c.node(3).membership().voters(), vec![1, 2], "3 received the entry that removes it");
    assert_eq!(c.node(1).peers(), &[2], "the leader no longer replicates to 3");
    let term = c.node(1).term();
    for _ in 0..100 {
        c.tick(3);
        c.settle();
    }
    assert_eq!(c.node(3).term(), term);
    assert_eq!(c.leaders(), vec![1]);
    // Two voters: both are needed.
    c.isolate(2);
    let w = c.propose(1, "w");
    c.run_ticks(3);
    assert!(c.node(1).commit() < w);
}

#[test]
fn a_removed_node_that_missed_its_removal_cannot_disrupt_the_cluster() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    let index = c.change(1, ConfChange::Remove { id: 3 }).unwrap();
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.node(1).commit(), index);
    assert_eq!(c.node(3).membership().voters(), vec![1, 2, 3], "3 never heard of its removal");
    for _ in 0..100 {
        c.tick(3);
    }
    c.heal();
    let term = c.node(1).term();
    // 3 campaigns (PreVote) again and again; nobody grants, nobody's term moves.
    for _ in 0..200 {
        c.tick_all();
        c.settle();
    }
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(2).term(), term);
    assert!(c.trace.iter().any(|t| t.starts_with("3->") && t.contains("PreVote")), "3 did try");
    // Even with no live leader to protect the lease, 3's log lacks the removal: no vote for it.
    c.crash(1);
    for _ in 0..300 {
        c.tick_all();
        c.settle();
    }
    assert!(!c.leaders().contains(&3));
}

#[test]
fn a_leader_that_removes_itself_hands_over_when_the_change_commits() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    let index = c.change(1, ConfChange::Remove { id: 1 }).unwrap();
    assert!(c.node(1).role() == Role::Leader, "it leads until the change commits");
    // The change is committed by 2 and 3 alone: the leader no longer counts itself.
    c.settle();
    // No tick was needed: TimeoutNow made the most caught-up voter campaign at once.
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    assert_eq!(c.node(leaders[0]).term(), term + 1);
    assert!(c.node(leaders[0]).commit() >= index);
    assert!(c.trace.iter().any(|t| t.starts_with("1->") && t.contains("TimeoutNow")));
    assert_eq!(c.node(1).role(), Role::Follower);
    for _ in 0..100 {
        c.tick_all();
        c.settle();
    }
    assert_eq!(c.leaders(), leaders, "the removed leader never campaigns");
    assert_eq!(c.node(leaders[0]).membership().voters(), vec![2, 3]);
}

#[test]
fn a_removed_leader_whose_hand_over_fails_steps_down_after_an_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.drop_kinds.insert("TimeoutNow");
    let index = c.change(1, ConfChange::Remove { id: 1 }).unwrap();
    c.settle();
    assert_eq!(c.node(1).commit(), index);
    assert_eq!(c.leaders(), vec![1], "still leading: the hand-over is pending");
    assert!(c.node(1).transferring_to().is_some());
    assert!(c.node_mut(1).propose(Bytes::from_static(b"x")).is_err(), "a removed leader takes no proposals");
    let ticks = c.node(1).config().election_ticks;
    for _ in 0..ticks {
        c.tick(1);
        c.settle();
    }
    assert_eq!(c.node(1).role(), Role::Follower);
    let leader = c.elect_in_majority(&[2, 3]);
    assert_eq!(c.node(leader).membership().voters(), vec![2, 3]);
}

#[test]
fn leadership_transfer_needs_no_election_timeout_and_refuses_proposals_meanwhile() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.propose(1, "before");
    c.settle();
    c.cut.insert((1, 3));
    c.propose(1, "unseen by 3");
    c.settle();
    c.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(c.node(1).transferring_to(), Some(3));
    assert_eq!(
        c.node_mut(1).propose(Bytes::from_static(b"during")),
        Err(ProposeError::TransferInProgress { to: 3 })
    );
    assert_eq!(c.change(1, ConfChange::Remove { id: 2 }), Err(ConfChangeError::TransferInProgress { to: 3 }));
    c.heal();
    // A heartbeat round lets 1 bring 3 up to date; then TimeoutNow; then 3 wins at once.
    c.run_ticks(3);
    assert_eq!(c.leaders(), vec![3]);
    assert_eq!(c.node(3).term(), term + 1);
    assert!(c.trace.iter().any(|t| t.contains("RequestVote") && t.contains("transfer")));
    assert_eq!(c.node(1).transferring_to(), None);
    assert_eq!(
        c.node_mut(1).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: Some(3) })
    );
}

#[test]
fn a_transfer_that_does_not_complete_times_out_and_proposals_resume() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, "w");
    c.settle();
    c.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(c.node_mut(1).transfer_leader(2), Err(TransferError::InProgress { to: 3 }));
    let ticks = c.node(1).config().election_ticks;
    for _ in 0..ticks - 1 {
        c.tick_all();
        c.settle();
    }
    assert!(c.node_mut(1).propose(Bytes::from_static(b"x")).is_err());
    c.tick_all();
    c.settle();
    assert_eq!(c.node(1).transferring_to(), None);
    assert!(c.node_mut(1).propose(Bytes::from_static(b"x")).is_ok());
    assert_eq!(c.leaders(), vec![1]);
}

#[test]
fn only_voters_can_be_transfer_targets_and_only_leaders_transfer() {
    let mut c = with_learner();
    assert_eq!(c.node_mut(1).transfer_leader(4), Err(TransferError::NotAVoter { id: 4 }));
    assert_eq!(c.node_mut(2).transfer_leader(3), Err(TransferError::NotLeader { leader: Some(1) }));
    assert_eq!(c.node_mut(1).transfer_leader(1), Ok(()));
    assert_eq!(c.node(1).transferring_to(), None);
    // A TimeoutNow reaching a learner (e.g. a stale one) is ignored.
    let term = c.node(4).term();
    c.queue.push_back(raft::Message { from: 1, to: 4, term, body: MessageBody::TimeoutNow });
    c.settle();
    assert_eq!(c.node(4).role(), Role::Follower);
    assert_eq!(c.leaders(), vec![1]);
}

#[test]
fn a_truncated_configuration_entry_is_forgotten() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.add_node(4);
    c.isolate(4);
    let index = c.change(1, add(4)).unwrap();
    c.settle();
    assert_eq!(c.node(1).membership().learners(), vec![4], "effective when appended, uncommitted");
    assert_eq!(c.node(1).membership_index(), index);
    // 2 and 3 elect a leader and overwrite index `index`.
    let leader = c.elect_in_majority(&[2, 3]);
    c.propose(leader, "overwrites");
    c.settle();
    c.heal();
    c.isolate(4);
    c.run_ticks(3);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(c.node(1).membership().learners().is_empty(), "1 went back to the configuration before");
    assert_eq!(c.node(1).membership().voters(), vec![1, 2, 3]);
    assert!(!c.node(1).entry(index).unwrap().is_config(), "the new leader's entry replaced it");
}

#[test]
fn membership_survives_restarts_through_the_log_and_through_snapshots() {
    let mut c = with_learner();
    let index = c.change(1, ConfChange::Promote { id: 4 }).unwrap();
    c.settle();
    c.run_ticks(2);
    c.change(1, ConfChange::Remove { id: 2 }).unwrap();
    c.settle();
    c.run_ticks(2);
    assert_eq!(c.node(1).membership().voters(), vec![1, 3, 4]);
    // From the log.
    for id in [1, 3, 4] {
        c.crash(id);
        c.restart(id);
        assert_eq!(c.node(id).membership().voters(), vec![1, 3, 4], "node {id} after restart");
    }
    c.elect(3);
    // From a snapshot: compact everything, restart, and send a new node the snapshot.
    c.run_ticks(3);
    let applied = c.node(3).applied();
    assert!(applied > index);
    for id in [1, 3, 4] {
        c.compact(id, applied);
        c.crash(id);
        c.restart(id);
        assert_eq!(c.node(id).membership().voters(), vec![1, 3, 4]);
        assert_eq!(c.node(id).first_index(), applied + 1);
    }
    let leader = c.elect_in_majority(&[1, 3, 4]);
    c.add_node(5);
    c.change(leader, add(5)).unwrap();
    c.run_ticks(15);
    assert!(c.snapshot_requests.contains(&(leader, 5)));
    assert_eq!(c.install_snapshot(leader, 5), Some(raft::StorageAction::Reset));
    c.run_ticks(3);
    assert_eq!(c.node(5).membership().voters(), vec![1, 3, 4]);
    assert_eq!(c.node(5).membership().learners(), vec![5]);
    assert_eq!(c.node(5).commit(), c.node(leader).commit());
}

#[test]
fn every_node_of_a_cluster_can_be_replaced_one_by_one() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let mut leader = 1;
    for (old, new) in [(1, 4), (2, 5), (3, 6)] {
        c.add_node(new);
        c.change(leader, add(new)).unwrap();
        c.run_ticks(3);
        c.change(leader, ConfChange::Promote { id: new }).unwrap();
        c.run_ticks(3);
        c.propose(leader, &format!("while {new} joins"));
        c.change(leader, ConfChange::Remove { id: old }).unwrap();
        c.run_ticks(3);
        let leaders = c.leaders();
        assert_eq!(leaders.len(), 1, "{leaders:?}");
        leader = leaders[0];
        assert_ne!(leader, old, "the removed node does not lead");
    }
    assert_eq!(c.node(leader).membership().voters(), vec![4, 5, 6]);
    for id in [4, 5, 6] {
        assert_eq!(c.applied[&id], c.applied[&leader], "node {id} applied everything");
    }
    for _ in 0..100 {
        c.tick_all();
        c.settle();
    }
    for old in [1, 2, 3] {
        assert_ne!(c.node(old).role(), Role::Leader);
    }
}

/// Flushes and delivers until nothing moves, holding back (into `held`) every TimeoutNow.
fn settle_holding_timeout_now(c: &mut Cluster, held: &mut Vec<raft::Message>) {
    for _ in 0..10_000 {
        c.flush();
        held.extend(c.queue.iter().filter(|m| m.body == MessageBody::TimeoutNow).cloned());
        c.queue.retain(|m| m.body != MessageBody::TimeoutNow);
        if c.queue.is_empty() {
            return;
        }
        while c.deliver_one() {}
    }
    panic!("cluster did not settle");
}

#[test]
fn a_transfer_target_told_late_in_the_timeout_still_finds_the_leaders_log_unchanged() {
    // Found by the simulator (seeds 704724, 803389): the target took most of the transfer's
    // election timeout to catch up, the leader abandoned the transfer just after sending
    // TimeoutNow and took proposals again, so the target's campaign arrived with a log behind the
    // leader's: it deposed the leader (a higher term) and could not win, leaving no leader for
    // another election timeout. The timeout now restarts when TimeoutNow is sent.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
    });
    c.elect(1);
    let term = c.node(1).term();
    let ticks = c.node(1).config().election_ticks;
    // Node 3 misses an entry, so the transfer has to bring it up to date first: while cut off,
    // that takes most of the timeout.
    c.cut.insert((1, 3));
    c.propose(1, "missed by 3");
    c.settle();
    c.node_mut(1).transfer_leader(3).unwrap();
    let mut held = Vec::new();
    for _ in 0..ticks - 3 {
        c.tick(1);
        settle_holding_timeout_now(&mut c, &mut held);
    }
    assert!(held.is_empty());
    c.heal();
    let mut spent = ticks - 3;
    while held.is_empty() {
        assert!(spent < ticks, "node 3 was not caught up within the timeout");
        c.tick(1);
        settle_holding_timeout_now(&mut c, &mut held);
        spent += 1;
    }
    // TimeoutNow is on its way (slowly) while the leader's clock passes the transfer's start
    // plus an election timeout; node 3 hears nothing more meanwhile.
    c.cut.insert((1, 3));
    let mut accepted = 0;
    for _ in 0..4 {
        c.tick(1);
        accepted += u32::from(c.node_mut(1).propose(Bytes::from_static(b"during")).is_ok());
        c.settle();
    }
    assert!(spent + 4 > ticks, "the leader's clock passed the original deadline");
    assert_eq!(accepted, 0, "the leader took proposals while its TimeoutNow was in flight");
    // TimeoutNow arrives; node 3 campaigns with the leader's whole log and wins.
    c.heal();
    c.queue.extend(held);
    c.settle();
    assert_eq!(c.leaders(), vec![3]);
    assert_eq!(c.node(3).term(), term + 1);
    assert_eq!(c.node(1).leader(), Some(3));
}

#[test]
fn a_voter_that_granted_a_transfer_ignores_a_disruptive_candidate_until_the_winner_is_heard() {
    // Found by the simulator (seeds 703116, 1001668; CheckQuorum without PreVote): a removed node
    // that never learned of its removal campaigns in ever higher terms. Voters ignore it while
    // they hear from a leader (thesis §4.2.3), but one that had just granted a leadership
    // transfer's vote had a new term and no leader yet, took the stranger's higher term, and so
    // deposed the transfer's winner. The refusal now lasts an election timeout from the last time
    // the voter heard from a leader, whatever its term since.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = true;
    });
    c.elect(1);
    c.run_ticks(2);
    let term = c.node(1).term();
    c.node_mut(1).transfer_leader(2).unwrap();
    // Deliver until node 3 granted node 2's transfer vote (and has not heard from it as leader).
    for _ in 0..1000 {
        if c.node(3).voted_for() == Some(2) {
            break;
        }
        c.flush();
        c.deliver_one();
    }
    assert_eq!((c.node(3).term(), c.node(3).voted_for(), c.node(3).leader()), (term + 1, Some(2), None));
    // Node 4, removed long ago (its log ends before its removal), asks for votes in a much
    // higher term.
    c.node_mut(3).step(raft::Message {
        from: 4,
        to: 3,
        term: term + 5,
        body: MessageBody::RequestVote { last_log_index: 1, last_log_term: 1, transfer: false },
    });
    assert_eq!(c.node(3).term(), term + 1, "the disruptive candidate's term was taken");
    assert!(matches!(
        c.node(3).election_log().since(0).last(),
        Some((_, raft::ElectionEvent::Vote { from: 4, refused: Some(raft::Refusal::Lease { .. }), .. }))
    ));
    c.settle();
    c.run_ticks(3);
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.node(2).term(), term + 1);
    assert_eq!(c.node(3).leader(), Some(2));
}
