//! A follower's reads go to the leader as one ReadIndex request per batch, named by the first
//! read's id. A read whose request failed is asked again under a new id, so a late answer to the
//! failed request can never serve reads that joined a later request (they arrived after the index
//! it carries was taken).

mod common;

use std::path::Path;

use bytes::Bytes;
use engine::kv::Query;
use engine::{Driver, DriverConfig, Input, PeerMessage, Request, SnapshotConfig};
use raft::{Message, MessageBody, NodeId};
use storage::{LogOptions, MemFs};

const ELECTION: u32 = 10;

fn config(id: NodeId) -> DriverConfig {
    let mut raft = raft::Config::new(id, vec![1, 2, 3]);
    raft.election_ticks = ELECTION;
    raft.heartbeat_ticks = 2;
    raft.seed = 11 + id;
    DriverConfig {
        raft,
        session: 90 + id,
        request_timeout_ticks: 10_000,
        forward_retry_ticks: 10_000,
        limbo_ticks: 10_000,
        write_window: 8,
        log: LogOptions::default(),
        snapshot: SnapshotConfig { entries: 0, ..SnapshotConfig::default() },
        deferred_sync: false,
        record_applies: true,
    }
}

fn get() -> Request {
    Request::Read(Query::Get { key: Bytes::from_static(b"k") })
}

fn from_leader(body: MessageBody) -> Input {
    Input::Peer(PeerMessage::Raft(Message { from: 1, to: 2, term: 1, body }))
}

fn heartbeat() -> Input {
    from_leader(MessageBody::Heartbeat { leader_commit: 0, read_round: 0 })
}

/// The request ids of the ReadIndex messages among `messages`.
fn read_index_requests(messages: &[PeerMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            PeerMessage::Raft(Message { body: MessageBody::ReadIndex { request_id }, .. }) => {
                Some(*request_id)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_late_answer_to_a_failed_read_index_request_serves_no_later_read() {
    let mut d = Driver::open(MemFs::new(), Path::new("/d"), config(2)).expect("opens");
    // Node 2 follows node 1 (term 1) and forwards a read; the leader never answers.
    let (result, rec) = common::run(&mut d, vec![heartbeat(), Input::Client(1, get())]);
    result.expect("batch");
    let first = read_index_requests(&rec.messages);
    assert_eq!(first.len(), 1, "{:?}", rec.messages);
    // Heartbeats keep node 2 a follower of node 1 while its request times out in the core (two
    // election timeouts); the driver asks again, and a new read arrives in the same batch.
    let mut asked_again = Vec::new();
    for t in 0..(4 * ELECTION) {
        let mut inputs = vec![Input::Tick];
        if t % 2 == 0 {
            inputs.push(heartbeat());
        }
        let (result, rec) = common::run(&mut d, inputs);
        result.expect("tick");
        assert!(rec.answers.is_empty(), "nothing answered the read: {:?}", rec.answers);
        asked_again = read_index_requests(&rec.messages);
        if !asked_again.is_empty() {
            break;
        }
    }
    let (result, rec) = common::run(&mut d, vec![Input::Client(2, get())]);
    result.expect("batch");
    asked_again.extend(read_index_requests(&rec.messages));
    assert!(!asked_again.is_empty(), "the failed read was asked again");
    assert!(!asked_again.contains(&first[0]), "asked again under a new name: {first:?} then {asked_again:?}");
    // The answer to the first request arrives late, with an index taken before read 2 arrived: it
    // must serve nothing.
    let late = from_leader(MessageBody::ReadIndexResponse { request_id: first[0], index: Some(0) });
    let (result, rec) = common::run(&mut d, vec![late]);
    result.expect("batch");
    assert!(rec.answers.is_empty(), "a late answer served reads: {:?}", rec.answers);
    // The answers to the current requests serve both reads.
    let answers: Vec<Input> = asked_again
        .iter()
        .map(|&request_id| from_leader(MessageBody::ReadIndexResponse { request_id, index: Some(0) }))
        .collect();
    let (result, rec) = common::run(&mut d, answers);
    result.expect("batch");
    let mut answered: Vec<u64> = rec.answers.iter().map(|(id, _)| *id).collect();
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2], "{:?}", rec.answers);
}
