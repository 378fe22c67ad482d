//! Tests of the peer transport over real loopback sockets: delivery and order of every message kind,
//! reconnection, bounded queues in front of dead or stuck peers, and refusal of strangers, garbage
//! and other clusters. Ports are picked free by binding 127.0.0.1:0.
//!
//! Waiting is done on observable state (counters, channels) with a generous deadline, never with a
//! fixed sleep: a test fails only if the awaited state does not come at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use engine::PeerMessage;
use raft::{Entry, Message, MessageBody, NodeId};
use raft_kv::transport::{Transport, TransportConfig, TransportStats, TransportTuning};
use raft_kv::wire::{self, Handshake, MAX_HANDSHAKE_FRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CLUSTER: u64 = 0xC1;
const DEADLINE: Duration = Duration::from_secs(20);

/// Fast timings so that reconnection tests do not wait long.
fn tuning() -> TransportTuning {
    TransportTuning {
        handshake_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(10),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        keepalive_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(2),
    }
}

/// A listener on `addr`, bound so that a restarted node can bind the port of its previous
/// incarnation at once.
fn listener_on(addr: SocketAddr) -> std::net::TcpListener {
    raft_kv::transport::bind_listener(addr).unwrap()
}

fn free_listener() -> std::net::TcpListener {
    listener_on("127.0.0.1:0".parse().unwrap())
}

/// An address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Node {
    transport: Transport,
    rx: mpsc::Receiver<PeerMessage>,
}

async fn start_node(
    id: NodeId,
    cluster_id: u64,
    listener: std::net::TcpListener,
    peers: &BTreeMap<NodeId, String>,
    queue_capacity: usize,
    tuning: TransportTuning,
) -> Node {
    let (tx, rx) = mpsc::channel(1024);
    let cfg = TransportConfig {
        id,
        cluster_id,
        listener,
        peers: peers.clone(),
        queue_capacity,
        max_frame: wire::DEFAULT_MAX_FRAME,
        cluster_token: None,
        peer_tls: None,
        advertised: String::new(),
    };
    let transport = Transport::start_with(cfg, tuning, tx).await.unwrap();
    Node { transport, rx }
}

/// Polls `cond` on the transport's stats until it holds.
async fn wait_stats(t: &Transport, what: &str, cond: impl Fn(&TransportStats) -> bool) -> TransportStats {
    let start = Instant::now();
    loop {
        let stats = t.stats();
        if cond(&stats) {
            return stats;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; stats: {stats:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn recv(rx: &mut mpsc::Receiver<PeerMessage>) -> PeerMessage {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("channel closed")
}

async fn recv_n(rx: &mut mpsc::Receiver<PeerMessage>, n: usize) -> Vec<PeerMessage> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(rx).await);
    }
    out
}

fn raft(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> PeerMessage {
    PeerMessage::Raft(Message { from, to, term, body })
}

/// One message of every kind, all tagged with `seq` so that order can be checked.
fn all_kinds(from: NodeId, to: NodeId, seq: u64) -> Vec<PeerMessage> {
    let entries =
        (0..3).map(|i| Entry::new(seq, seq * 10 + i, format!("cmd {from}->{to} #{seq}.{i}"))).collect();
    vec![
        raft(from, to, seq, MessageBody::PreVote { last_log_index: seq, last_log_term: 1 }),
        raft(from, to, seq, MessageBody::PreVoteResponse { granted: seq & 1 == 0 }),
        raft(
            from,
            to,
            seq,
            MessageBody::RequestVote { last_log_index: seq, last_log_term: 2, transfer: false },
        ),
        raft(from, to, seq, MessageBody::RequestVoteResponse { granted: true }),
        raft(
            from,
            to,
            seq,
            MessageBody::AppendEntries { prev_log_index: seq, prev_log_term: 3, entries, leader_commit: seq },
        ),
        raft(
            from,
            to,
            seq,
            MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            },
        ),
        raft(
            from,
            to,
            seq,
            MessageBody::AppendEntriesResponse {
                success: false,
                index: seq,
                conflict_term: 4,
                conflict_index: 5,
            },
        ),
        raft(from, to, seq, MessageBody::Heartbeat { leader_commit: seq, read_round: seq + 1 }),
        raft(from, to, seq, MessageBody::HeartbeatResponse { read_round: seq }),
        raft(from, to, seq, MessageBody::ReadIndex { request_id: seq }),
        raft(from, to, seq, MessageBody::ReadIndexResponse { request_id: seq, index: Some(seq) }),
        raft(from, to, seq, MessageBody::ReadIndexResponse { request_id: seq, index: None }),
        PeerMessage::Forward { from, to, proposals: vec![Bytes::from(format!("p{seq}")), Bytes::new()] },
        PeerMessage::SnapshotAck {
            from,
            to,
            index: seq,
            snap_term: 1,
            received: seq * 4096,
            status: engine::ChunkStatus::Progress,
        },
    ]
}

/// A snapshot chunk of `len` bytes at offset `seq * len`.
fn chunk(from: NodeId, to: NodeId, seq: u64, len: usize) -> PeerMessage {
    PeerMessage::SnapshotChunk {
        from,
        to,
        term: 2,
        index: 1000,
        snap_term: 1,
        offset: seq * len as u64,
        len: 64 * len as u64,
        data: Bytes::from(vec![seq as u8; len]),
    }
}

fn heartbeat(from: NodeId, to: NodeId, seq: u64) -> PeerMessage {
    raft(from, to, 1, MessageBody::Heartbeat { leader_commit: 0, read_round: seq })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_every_kind_in_order() {
    let listeners: Vec<_> = (0..3).map(|_| free_listener()).collect();
    // The whole cluster map, this node included (the transport ignores its own entry).
    let peers: BTreeMap<NodeId, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(start_node(i as u64 + 1, CLUSTER, l, &peers, 4096, tuning()).await);
    }

    // Every node sends every kind, 20 rounds, to both others, in one interleaved stream.
    const ROUNDS: u64 = 20;
    let mut expected: BTreeMap<(NodeId, NodeId), Vec<PeerMessage>> = BTreeMap::new();
    for seq in 0..ROUNDS {
        for from in 1..=3u64 {
            let mut batch = Vec::new();
            for to in (1..=3u64).filter(|&to| to != from) {
                let msgs = all_kinds(from, to, seq);
                expected.entry((from, to)).or_default().extend(msgs.clone());
                batch.extend(msgs);
            }
            nodes[from as usize - 1].transport.send(batch);
        }
    }
    // Messages to itself or an unknown node are dropped and counted.
    nodes[0].transport.send(vec![heartbeat(1, 1, 0), heartbeat(1, 9, 0)]);

    let per_pair = expected[&(1, 2)].len();
    for (i, node) in nodes.iter_mut().enumerate() {
        let me = i as u64 + 1;
        let got = recv_n(&mut node.rx, 2 * per_pair).await;
        for from in (1..=3u64).filter(|&f| f != me) {
            let from_peer: Vec<_> = got.iter().filter(|m| m.from() == from).cloned().collect();
            assert_eq!(from_peer, expected[&(from, me)], "messages {from} -> {me} lost or reordered");
        }
        assert!(node.rx.try_recv().is_err(), "node {me} received more than was sent");
    }
    for (i, node) in nodes.iter().enumerate() {
        let me = i as u64 + 1;
        // The receivers have everything; the senders may still be about to count their last write.
        let stats = wait_stats(&node.transport, "sent counters", |s| {
            s.peers.values().all(|p| p.sent == per_pair as u64)
        })
        .await;
        assert_eq!(stats.peers.len(), 2, "a node is not its own peer");
        for (peer, s) in &stats.peers {
            assert!(s.connected, "{me} -> {peer} not connected");
            assert_eq!(
                (s.sent, s.received, s.dropped()),
                (per_pair as u64, per_pair as u64, 0),
                "{me} <-> {peer}"
            );
            assert_eq!(s.connects, 1);
        }
        assert_eq!(stats.misrouted, if me == 1 { 2 } else { 0 });
        assert_eq!((stats.rejected_connections, stats.invalid_messages, stats.closed_bad_frames), (0, 0, 0));
    }
    for node in nodes {
        node.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_slow_to_answer_at_start_gets_the_queued_messages() {
    // B's port accepts connections (the kernel completes them) but B does not answer yet: A's first
    // dial is under way, not failed, so messages wait in the queue for it.
    let a_listener = free_listener();
    let b_listener = free_listener();
    let b_addr = b_listener.local_addr().unwrap();
    let peers = BTreeMap::from([(1, a_listener.local_addr().unwrap().to_string()), (2, b_addr.to_string())]);
    let a = start_node(1, CLUSTER, a_listener, &peers, 4096, tuning()).await;

    let msgs: Vec<_> = (0..50).flat_map(|seq| all_kinds(1, 2, seq)).collect();
    a.transport.send(msgs.clone());
    let s = a.transport.stats().peers[&2].clone();
    assert_eq!((s.queued, s.dropped(), s.connect_failures), (msgs.len(), 0, 0), "messages wait in the queue");

    let mut b = start_node(2, CLUSTER, b_listener, &peers, 4096, tuning()).await;
    assert_eq!(recv_n(&mut b.rx, msgs.len()).await, msgs, "queued messages delivered in order");
    let total = msgs.len() as u64;
    let stats =
        wait_stats(&a.transport, "the late peer's messages counted", |s| s.peers[&2].sent == total).await;
    assert_eq!(stats.peers[&2].connects, 1);
    // Everything was queued before the connection: written in full batches of 256 messages.
    assert_eq!(stats.peers[&2].writes, 3, "650 queued messages should take 3 writes");
    // And the other direction works too.
    b.transport.send(vec![heartbeat(2, 1, 7)]);
    let mut a = a;
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 7));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reconnected() {
    let (la, lb) = (free_listener(), free_listener());
    let b_addr = lb.local_addr().unwrap();
    let peers = BTreeMap::from([(1, la.local_addr().unwrap().to_string()), (2, b_addr.to_string())]);
    let mut a = start_node(1, CLUSTER, la, &peers, 4096, tuning()).await;
    let mut b = start_node(2, CLUSTER, lb, &peers, 4096, tuning()).await;

    a.transport.send((0..10).map(|i| heartbeat(1, 2, i)).collect());
    b.transport.send(vec![heartbeat(2, 1, 100)]);
    assert_eq!(recv_n(&mut b.rx, 10).await, (0..10).map(|i| heartbeat(1, 2, i)).collect::<Vec<_>>());
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 100));

    // B goes away; A notices without having to write.
    b.transport.shutdown().await;
    wait_stats(&a.transport, "A to notice B is gone", |s| !s.peers[&2].connected).await;
    wait_stats(&a.transport, "A to fail dialing B", |s| s.peers[&2].connect_failures >= 1).await;
    // B is away: nothing is kept for it.
    a.transport.send((10..20).map(|i| heartbeat(1, 2, i)).collect());
    let s = a.transport.stats().peers[&2].clone();
    assert_eq!((s.queued, s.dropped_away), (0, 10), "{s:?}");

    // B restarts on the same port, as a new process would.
    let mut b = start_node(2, CLUSTER, listener_on(b_addr), &peers, 4096, tuning()).await;
    let stats = wait_stats(&a.transport, "A reconnected", |s| s.peers[&2].connected).await;
    assert_eq!(stats.peers[&2].reconnects(), 1);
    assert_eq!(stats.peers[&2].dropped(), 10);
    a.transport.send((20..30).map(|i| heartbeat(1, 2, i)).collect());
    assert_eq!(recv_n(&mut b.rx, 10).await, (20..30).map(|i| heartbeat(1, 2, i)).collect::<Vec<_>>());
    // The new B reaches A (whose inbound side drops the dead connection of the old B).
    b.transport.send(vec![heartbeat(2, 1, 101)]);
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 101));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_queue_stays_bounded() {
    let la = free_listener();
    let peers = BTreeMap::from([(1, la.local_addr().unwrap().to_string()), (2, dead_addr().to_string())]);
    let a = start_node(1, CLUSTER, la, &peers, 100, tuning()).await;

    // The driver thread is a plain thread: send() must work and never block there. Before the
    // first dial failed, the queue fills up to its capacity and drops the rest.
    let t = a.transport.clone();
    let send_all = move |from: u64| {
        let t = t.clone();
        std::thread::spawn(move || {
            for i in from..from + 10_000 {
                t.send(vec![heartbeat(1, 2, i)]);
            }
        })
        .join()
        .unwrap()
    };
    send_all(0);
    let s = wait_stats(&a.transport, "the dial to fail", |s| s.peers[&2].connect_failures >= 1).await;
    let s = s.peers[&2].clone();
    // Either the dial failed before the sends (all dropped as away) or after (100 queued, then
    // discarded as away, and the rest dropped as the queue was full).
    assert_eq!((s.queued, s.dropped(), s.sent, s.connected), (0, 10_000, 0, false), "{s:?}");
    assert!(s.dropped_full <= 9_900, "{s:?}");
    // Once away, nothing is queued at all.
    send_all(10_000);
    let s = a.transport.stats().peers[&2].clone();
    assert_eq!((s.queued, s.dropped_away, s.sent), (0, 20_000 - s.dropped_full, 0), "{s:?}");
    assert_eq!((a.transport.queued(2), a.transport.queued(3)), (Some(0), None));
    a.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_go_behind_heartbeats_and_keep_their_order() {
    // Everything is queued while B does not answer A's first dial yet, so the first batch holds all
    // of it (deterministic).
    let a_listener = free_listener();
    let b_listener = free_listener();
    let b_addr = b_listener.local_addr().unwrap();
    let peers = BTreeMap::from([(1, a_listener.local_addr().unwrap().to_string()), (2, b_addr.to_string())]);
    let a = start_node(1, CLUSTER, a_listener, &peers, 4096, tuning()).await;
    const CHUNKS: u64 = 12;
    const LEN: usize = 1 << 20;
    let chunks: Vec<_> = (0..CHUNKS).map(|i| chunk(1, 2, i, LEN)).collect();
    let mut controls = vec![heartbeat(1, 2, 1)];
    controls.extend(all_kinds(1, 2, 7));
    controls.push(heartbeat(1, 2, 2));
    let mut msgs = chunks.clone();
    msgs.extend(controls.clone());
    a.transport.send(msgs.clone());
    assert_eq!(a.transport.stats().peers[&2].queued, msgs.len());

    let mut b = start_node(2, CLUSTER, b_listener, &peers, 4096, tuning()).await;
    let got = recv_n(&mut b.rx, msgs.len()).await;
    // The small messages went first, in their order, although they were queued after 12 MiB of
    // chunks; the chunks followed, in theirs.
    // (assert! rather than assert_eq!: the chunks' Debug output would be megabytes long.)
    assert!(got[..controls.len()] == controls[..], "heartbeats waited behind snapshot chunks");
    assert!(got[controls.len()..] == chunks[..], "chunks lost or reordered");
    let total = msgs.len() as u64;
    let s = wait_stats(&a.transport, "everything counted as sent", |s| s.peers[&2].sent == total).await;
    // One write per chunk (1 MiB each): never more than CHUNK_BYTES_PER_WRITE of chunks in a write.
    assert_eq!(s.peers[&2].writes, CHUNKS, "{s:?}");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

/// Accepts connections as peer `id`, answers the handshake, and then never reads: a stuck peer.
/// Returns the number of connections accepted so far through the channel.
async fn stuck_peer(listener: std::net::TcpListener, id: NodeId, accepted: mpsc::UnboundedSender<()>) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let mut held = Vec::new();
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs = vec![0u8; 1024];
        let _ = s.read(&mut hs).await.unwrap();
        let mut answer = BytesMut::new();
        wire::encode_frame(&Handshake::new(CLUSTER, id), MAX_HANDSHAKE_FRAME, &mut answer).unwrap();
        s.write_all(&answer).await.unwrap();
        held.push(s);
        let _ = accepted.send(());
    }
}

fn big_forward(i: u64) -> PeerMessage {
    PeerMessage::Forward { from: 1, to: 2, proposals: vec![Bytes::from(vec![i as u8; 64 * 1024])] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_peer_fills_a_bounded_queue_and_is_dropped_after_the_write_timeout() {
    let (la, lb) = (free_listener(), free_listener());
    let peers = BTreeMap::from([
        (1, la.local_addr().unwrap().to_string()),
        (2, lb.local_addr().unwrap().to_string()),
    ]);
    let (acc_tx, mut accepted) = mpsc::unbounded_channel();
    let fake = tokio::spawn(stuck_peer(lb, 2, acc_tx));
    let tuning = TransportTuning { write_timeout: Duration::from_millis(500), ..tuning() };
    let a = start_node(1, CLUSTER, la, &peers, 64, tuning).await;

    // 2000 x 64 KiB = 125 MiB: far beyond what the socket buffers can absorb.
    const TOTAL: u64 = 2000;
    let t = a.transport.clone();
    std::thread::spawn(move || {
        for i in 0..TOTAL {
            t.send(vec![big_forward(i)]);
        }
    })
    .join()
    .unwrap();
    let s = a.transport.stats().peers[&2].clone();
    assert!(s.queued <= 64, "queue exceeded its capacity: {s:?}");
    // Every message is sent, dropped, queued, or in the one batch being written.
    assert!(s.sent + s.dropped() + s.queued as u64 + 256 >= TOTAL, "drops not counted: {s:?}");
    assert!(s.dropped_full > 0, "{s:?}");
    assert!(s.sent * 64 * 1024 < 64 << 20, "a stuck peer cannot have absorbed {} messages", s.sent);

    // The blocked write times out: the connection is dropped (its batch counted lost) and redialed.
    assert!(tokio::time::timeout(DEADLINE, accepted.recv()).await.unwrap().is_some());
    assert!(
        tokio::time::timeout(DEADLINE, accepted.recv()).await.unwrap().is_some(),
        "no redial after the write timeout"
    );
    wait_stats(&a.transport, "the timed-out batch counted and the peer redialed", |s| {
        s.peers[&2].dropped_lost > 0 && s.peers[&2].connects >= 2
    })
    .await;
    // Shutdown does not hang on a blocked write.
    tokio::time::timeout(DEADLINE, a.transport.shutdown()).await.expect("shutdown hung on a stuck peer");
    fake.abort();
}

/// Connects to `addr`, writes `bytes`, and returns what the other side sent until it closed.
async fn poke(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection sending {:?} was not closed", bytes.escape_ascii().to_string());
    got
}

fn frame(msg: &impl prost::Message) -> BytesMut {
    let mut b = BytesMut::new();
    wire::encode_frame(msg, wire::DEFAULT_MAX_FRAME, &mut b).unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_garbage_are_disconnected_and_the_transport_keeps_working() {
    let (la, lb) = (free_listener(), free_listener());
    let a_addr = la.local_addr().unwrap();
    // Node 3 is configured but played by hand below.
    let peers = BTreeMap::from([
        (1, a_addr.to_string()),
        (2, lb.local_addr().unwrap().to_string()),
        (3, dead_addr().to_string()),
    ]);
    let tuning = TransportTuning { handshake_timeout: Duration::from_millis(300), ..tuning() };
    let mut a = start_node(1, CLUSTER, la, &peers, 4096, tuning).await;
    let mut b = start_node(2, CLUSTER, lb, &peers, 4096, tuning).await;
    b.transport.send(vec![heartbeat(2, 1, 1)]);
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 1));

    // Strangers get no answer at all.
    assert_eq!(poke(a_addr, b"PING\r\n").await, b"");
    assert_eq!(poke(a_addr, b"*1\r\n$4\r\nPING\r\n").await, b"");
    let mut x = 0x2545F4914F6CDD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert_eq!(poke(a_addr, &random).await, b"");
    // A small frame that is not a handshake (valid length, wrong magic).
    assert_eq!(poke(a_addr, &[0, 0, 0, 3, 1, 2, 3]).await, b"");
    // Silence until the handshake timeout.
    assert_eq!(poke(a_addr, b"").await, b"");

    // raft-kv peers that must be refused get A's handshake (so they can log why), then the close.
    // (A announces its keepalives in its answer.)
    let answer = frame(&Handshake::new(CLUSTER, 1).with_keepalive(tuning.keepalive_interval));
    assert_eq!(poke(a_addr, &frame(&Handshake::new(CLUSTER + 1, 3))).await, answer, "other cluster");
    let v2 = Handshake { version: wire::PROTOCOL_VERSION + 1, ..Handshake::new(CLUSTER, 3) };
    assert_eq!(poke(a_addr, &frame(&v2)).await, answer, "other version");
    assert_eq!(poke(a_addr, &frame(&Handshake::new(CLUSTER, 99))).await, answer, "unknown node");
    assert_eq!(poke(a_addr, &frame(&Handshake::new(CLUSTER, 1))).await, answer, "own id");
    let refused = wait_stats(&a.transport, "refusals counted", |s| s.rejected_connections >= 9).await;
    assert_eq!(refused.rejected_connections, 9);

    // An accepted peer (node 3 by hand) that then sends garbage is disconnected...
    let mut bad = frame(&Handshake::new(CLUSTER, 3));
    bad.put_u32(5);
    bad.put_slice(&[0xFF; 5]); // not protobuf
    poke(a_addr, &bad).await;
    // ...and so is one announcing a frame over the limit...
    let mut huge = frame(&Handshake::new(CLUSTER, 3));
    huge.put_u32(u32::MAX);
    poke(a_addr, &huge).await;
    wait_stats(&a.transport, "bad frames counted", |s| s.closed_bad_frames == 2).await;

    // ...while a well-formed message of a kind from the future, or misaddressed, is skipped.
    let mut s = TcpStream::connect(a_addr).await.unwrap();
    let mut out = frame(&Handshake::new(CLUSTER, 3));
    out.put_u32(5);
    out.put_slice(&[15 << 3 | 2, 3, 1, 2, 3]); // Envelope field 15: unknown to this version
    wire::encode_message(heartbeat(2, 1, 5), wire::DEFAULT_MAX_FRAME, &mut out).unwrap(); // from 2 on 3's connection
                                                                                          // A chunk status from the future (9) is refused the same way.
    let future_ack = wire::Envelope {
        kind: Some(wire::EnvelopeKind::SnapshotAck(wire::SnapshotAck {
            from: 3,
            to: 1,
            index: 7,
            snap_term: 1,
            received: 0,
            status: 9,
        })),
    };
    wire::encode_frame(&future_ack, wire::DEFAULT_MAX_FRAME, &mut out).unwrap();
    wire::encode_message(heartbeat(3, 1, 6), wire::DEFAULT_MAX_FRAME, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    assert_eq!(recv(&mut a.rx).await, heartbeat(3, 1, 6));
    let stats = a.transport.stats();
    assert_eq!((stats.invalid_messages, stats.peers[&3].received), (3, 1));

    // Through all of it, B's connection was untouched.
    b.transport.send(vec![heartbeat(2, 1, 2)]);
    a.transport.send(vec![heartbeat(1, 2, 3)]);
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 2));
    assert_eq!(recv(&mut b.rx).await, heartbeat(1, 2, 3));
    assert_eq!(a.transport.stats().peers[&2].connects, 1);
    assert_eq!(b.transport.stats().peers[&1].connects, 1);
    drop(s);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_and_misaddressed_peers_are_refused() {
    // A (cluster 1) and C (cluster 2) list each other: nothing may pass, either way.
    let (la, lc) = (free_listener(), free_listener());
    let peers = BTreeMap::from([
        (1, la.local_addr().unwrap().to_string()),
        (2, lc.local_addr().unwrap().to_string()),
    ]);
    let mut a = start_node(1, 1, la, &peers, 4096, tuning()).await;
    let mut c = start_node(2, 2, lc, &peers, 4096, tuning()).await;
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    c.transport.send(vec![heartbeat(2, 1, 1)]);
    for (t, what) in [(&a.transport, "A"), (&c.transport, "C")] {
        wait_stats(t, what, |s| {
            s.rejected_connections >= 2 && s.peers.values().all(|p| p.connect_failures >= 2)
        })
        .await;
    }
    assert!(a.rx.try_recv().is_err() && c.rx.try_recv().is_err(), "a message crossed clusters");
    for t in [&a.transport, &c.transport] {
        let s = t.stats();
        let p = s.peers.values().next().unwrap();
        assert_eq!((p.connects, p.sent, p.received, p.queued, p.dropped_away), (0, 0, 0, 0, 1));
    }
    a.transport.shutdown().await;
    c.transport.shutdown().await;

    // D believes node 2 lives at E's address, but E is node 3: D must not deliver node 2's messages to E,
    // although E (which knows D) accepts D's connection and answers.
    let (ld, le) = (free_listener(), free_listener());
    let d_peers = BTreeMap::from([(2, le.local_addr().unwrap().to_string())]);
    let e_peers = BTreeMap::from([(1, ld.local_addr().unwrap().to_string())]);
    let d = start_node(1, CLUSTER, ld, &d_peers, 4096, tuning()).await;
    let mut e = start_node(3, CLUSTER, le, &e_peers, 4096, tuning()).await;
    d.transport.send(vec![heartbeat(1, 2, 1)]);
    let s =
        wait_stats(&d.transport, "misaddressed dials to fail", |s| s.peers[&2].connect_failures >= 2).await;
    assert_eq!((s.peers[&2].connects, s.peers[&2].queued, s.peers[&2].dropped_away), (0, 0, 1));
    assert!(e.rx.try_recv().is_err(), "node 2's message reached node 3");
    assert_eq!(e.transport.stats().peers[&1].received, 0);
    d.transport.shutdown().await;
    e.transport.shutdown().await;
}

/// A message with a sequence number, `pad` bytes long, from 1 to 2.
fn numbered(seq: u64, pad: usize) -> PeerMessage {
    PeerMessage::Forward {
        from: 1,
        to: 2,
        proposals: vec![Bytes::from(seq.to_be_bytes().to_vec()), Bytes::from(vec![7u8; pad])],
    }
}

/// Direct writes (the sender writing into an idle connection) and queued writes (through the
/// outbound task, once a direct write did not fit) must keep per-peer order and lose nothing: the
/// receiver does not read at first, so the socket buffers fill, direct writes end part-way and the
/// task takes over, then the receiver drains everything. Sent from a plain thread, as the node
/// thread does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_queued_writes_keep_order_when_the_socket_fills() {
    let (la, lb) = (free_listener(), free_listener());
    let peers: BTreeMap<NodeId, String> =
        [(1, la.local_addr().unwrap().to_string()), (2, lb.local_addr().unwrap().to_string())].into();
    let a = start_node(1, CLUSTER, la, &peers, 100_000, tuning()).await;
    let mut b = start_node(2, CLUSTER, lb, &peers, 100_000, tuning()).await;
    // Connected (a heartbeat went through): later sends may take the direct path.
    a.transport.send(vec![heartbeat(1, 2, 0)]);
    assert_eq!(recv(&mut b.rx).await, heartbeat(1, 2, 0));

    const N: u64 = 3000;
    let sender = a.transport.clone();
    let expected: Vec<PeerMessage> =
        (1..=N).map(|i| numbered(i, if i % 3 == 0 { 48 * 1024 } else { (i % 200) as usize })).collect();
    let batches = expected.clone();
    std::thread::spawn(move || {
        for batch in batches.chunks(7) {
            sender.send(batch.to_vec());
        }
    })
    .join()
    .unwrap();
    let got = recv_n(&mut b.rx, N as usize).await;
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "message {} arrived out of order or damaged", i + 1);
    }
    let stats = wait_stats(&a.transport, "everything sent", |s| s.peers[&2].sent == N + 1).await;
    assert_eq!(stats.peers[&2].dropped(), 0, "{stats:#?}");
    assert!(b.rx.try_recv().is_err(), "more arrived than was sent");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

/// A TCP relay that can be cut silently, the way a partition that drops packets looks to both ends:
/// while cut, it neither reads nor writes on any connection (the senders' writes pile up in socket
/// buffers, no error, no close), and new connections are accepted but never relayed. Connections
/// relayed before a cut stay frozen for ever, as if stuck in TCP's retransmission backoff: only
/// connections made after the heal carry data.
struct SilentRelay {
    addr: SocketAddr,
    /// Even: up; odd: cut. Each cut and heal bumps it.
    epoch: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentRelay {
    async fn start(target: SocketAddr) -> SilentRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (epoch, rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let mut rx = rx.clone();
                conns.spawn(async move {
                    let born = *rx.borrow();
                    if born % 2 == 1 {
                        // Accepted during a cut: never relayed.
                        std::future::pending::<()>().await;
                    }
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                        _ = rx.wait_for(|e| *e != born) => {}
                    }
                    // Cut: hold both sockets open and silent for ever.
                    let _frozen = (client, server);
                    std::future::pending::<()>().await;
                });
            }
        });
        SilentRelay { addr, epoch, task }
    }

    fn cut(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    fn heal(&self) {
        self.cut();
    }
}

/// A partition that silences the link (no error, no close) for longer than the idle timeout: both
/// ends close their silent connections, the peer counts as away (nothing queued for it), and once
/// the network heals a fresh connection carries messages again within about the dial timeout plus
/// the largest backoff, although the old connections never recover. Without the idle timeout the
/// link would stay on its frozen connections for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_is_detected_and_healed_within_the_dial_timeout() {
    let (la, lb) = (free_listener(), free_listener());
    let (a_addr, b_addr) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    // Each node reaches the other through a relay.
    let to_b = SilentRelay::start(b_addr).await;
    let to_a = SilentRelay::start(a_addr).await;
    let tuning = TransportTuning {
        handshake_timeout: Duration::from_millis(300),
        backoff_max: Duration::from_millis(150),
        keepalive_interval: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(300),
        ..tuning()
    };
    let a_peers = BTreeMap::from([(2, to_b.addr.to_string())]);
    let b_peers = BTreeMap::from([(1, to_a.addr.to_string())]);
    let mut a = start_node(1, CLUSTER, la, &a_peers, 4096, tuning).await;
    let mut b = start_node(2, CLUSTER, lb, &b_peers, 4096, tuning).await;
    a.transport.send(vec![heartbeat(1, 2, 0)]);
    b.transport.send(vec![heartbeat(2, 1, 0)]);
    assert_eq!(recv(&mut b.rx).await, heartbeat(1, 2, 0));
    assert_eq!(recv(&mut a.rx).await, heartbeat(2, 1, 0));

    to_b.cut();
    to_a.cut();
    let cut_at = Instant::now();
    // Both ends notice the silence on their own (neither has anything to write).
    for (t, peer) in [(&a.transport, 2), (&b.transport, 1)] {
        wait_stats(t, "the silent link closed and the peer away", |s| {
            let p = &s.peers[&peer];
            p.silent_closes >= 1 && !p.connected && p.connect_failures >= 1
        })
        .await;
    }
    let noticed = cut_at.elapsed();
    assert!(noticed < Duration::from_millis(1500), "silence noticed only after {noticed:?}");
    // While away, messages cost no memory: dropped and counted.
    a.transport.send((1..=100).map(|i| heartbeat(1, 2, i)).collect());
    let s = a.transport.stats().peers[&2].clone();
    assert_eq!(s.queued, 0, "{s:?}");
    assert!(s.dropped_away >= 100, "{s:?}");
    // Stay cut for a while: the dial timeouts and backoff go on.
    tokio::time::sleep(Duration::from_secs(2)).await;

    to_b.heal();
    to_a.heal();
    let healed_at = Instant::now();
    let mut seq = 1000;
    let mut delivered = [None, None];
    while delivered.iter().any(Option::is_none) {
        assert!(healed_at.elapsed() < DEADLINE, "the link did not recover after the heal: {delivered:?}");
        seq += 1;
        a.transport.send(vec![heartbeat(1, 2, seq)]);
        b.transport.send(vec![heartbeat(2, 1, seq)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        for (i, rx) in [&mut b.rx, &mut a.rx].into_iter().enumerate() {
            while let Ok(msg) = rx.try_recv() {
                assert!(
                    matches!(&msg, PeerMessage::Raft(m) if matches!(m.body, MessageBody::Heartbeat { read_round, .. } if read_round > 1000)),
                    "a message sent during the cut was delivered: {msg:?}"
                );
                delivered[i].get_or_insert(healed_at.elapsed());
            }
        }
    }
    let worst = delivered.iter().flatten().max().copied().unwrap_or_default();
    eprintln!(
        "silent cut: noticed after {noticed:?}; after the heal, A->B {:?}, B->A {:?}",
        delivered[0], delivered[1]
    );
    // Dial timeout 300 ms + backoff at most 150 ms between fresh attempts; the rest is slack for a
    // loaded machine.
    assert!(worst < Duration::from_millis(1500), "link back only {worst:?} after the heal");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
    to_a.task.abort();
    to_b.task.abort();
}

/// Keepalives keep an idle link up: with no message at all for many idle timeouts, the link is
/// never closed for silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_link_stays_up_on_keepalives() {
    let (la, lb) = (free_listener(), free_listener());
    let peers = BTreeMap::from([
        (1, la.local_addr().unwrap().to_string()),
        (2, lb.local_addr().unwrap().to_string()),
    ]);
    // 25 keepalives per idle timeout: a loaded machine does not starve the link that long.
    let tuning = TransportTuning {
        keepalive_interval: Duration::from_millis(20),
        idle_timeout: Duration::from_millis(500),
        ..tuning()
    };
    let a = start_node(1, CLUSTER, la, &peers, 4096, tuning).await;
    let mut b = start_node(2, CLUSTER, lb, &peers, 4096, tuning).await;
    a.transport.send(vec![heartbeat(1, 2, 0)]);
    assert_eq!(recv(&mut b.rx).await, heartbeat(1, 2, 0));
    tokio::time::sleep(Duration::from_millis(2000)).await; // four idle timeouts without a message
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(recv(&mut b.rx).await, heartbeat(1, 2, 1));
    for t in [&a.transport, &b.transport] {
        let s = t.stats();
        let p = s.peers.values().next().unwrap();
        assert_eq!((p.silent_closes, p.connect_failures, p.dropped()), (0, 0, 0), "{s:#?}");
    }
    assert_eq!(a.transport.stats().peers[&2].connects, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}
