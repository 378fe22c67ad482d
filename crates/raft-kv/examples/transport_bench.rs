//! Micro-benchmark of the peer transport: two transports on loopback, one plain thread (as the
//! driver thread would) sending AppendEntries messages of 64 entries x 100 bytes to the other as fast
//! as the queue takes them; the receiver counts what arrives.
//!
//! ```text
//! cargo run --release -p raft-kv --example transport_bench -- [seconds=5] [entries=64] [entry_bytes=100]
//! ```
//! Prints messages/s, entries/s, payload MB/s (entry data only) and wire MB/s (frames), and the mean
//! number of messages per write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::PeerMessage;
use raft::{Entry, Message, MessageBody};
use raft_kv::transport::{bind_listener, Transport, TransportConfig};
use raft_kv::wire::DEFAULT_MAX_FRAME;

const QUEUE: usize = 4096;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = arg(1, 5);
    let entries = arg(2, 64);
    let entry_bytes = arg(3, 100) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(seconds, entries, entry_bytes))
}

async fn run(seconds: u64, entries: u64, entry_bytes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let la = bind_listener("127.0.0.1:0".parse()?)?;
    let lb = bind_listener("127.0.0.1:0".parse()?)?;
    let peers = BTreeMap::from([(1, la.local_addr()?.to_string()), (2, lb.local_addr()?.to_string())]);
    let cfg = |id, listener| TransportConfig {
        id,
        cluster_id: 1,
        listener,
        peers: peers.clone(),
        queue_capacity: QUEUE,
        max_frame: DEFAULT_MAX_FRAME,
        cluster_token: None,
        peer_tls: None,
        advertised: String::new(),
    };
    let (a_tx, _a_rx) = tokio::sync::mpsc::channel(1024);
    let (b_tx, mut b_rx) = tokio::sync::mpsc::channel(8192);
    let a = Transport::start(cfg(1, la), a_tx).await?;
    let b = Transport::start(cfg(2, lb), b_tx).await?;

    // One message template; clones share the entry data (as a leader's log entries would).
    let data = Bytes::from(vec![0xAB; entry_bytes]);
    let template = PeerMessage::Raft(Message {
        from: 1,
        to: 2,
        term: 7,
        body: MessageBody::AppendEntries {
            prev_log_index: 1000,
            prev_log_term: 7,
            entries: (0..entries).map(|i| Entry::new(7, 1001 + i, data.clone())).collect(),
            leader_commit: 1000,
        },
    });

    // The sender: a plain thread, keeping the queue at most half full so nothing is dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (a, stop, template) = (a.clone(), stop.clone(), template.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if a.queued(2).unwrap_or(0) < QUEUE / 2 {
                    a.send(vec![template.clone(); 64]);
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        })
    };

    // Warm up for a second, then measure.
    let warmup = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warmup {
        b_rx.recv().await.ok_or("inbound channel closed")?;
    }
    let before = b.stats().peers[&1].clone();
    let a_before = a.stats().peers[&2].clone();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let (mut msgs, mut ents, mut payload) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        let Some(PeerMessage::Raft(Message { body: MessageBody::AppendEntries { entries, .. }, .. })) =
            b_rx.recv().await
        else {
            return Err("unexpected message".into());
        };
        msgs += 1;
        ents += entries.len() as u64;
        payload += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let after = b.stats().peers[&1].clone();
    let a_after = a.stats().peers[&2].clone();
    sender.join().map_err(|_| "sender thread panicked")?;

    let wire = after.received_bytes - before.received_bytes;
    let writes = a_after.writes - a_before.writes;
    let sent = a_after.sent - a_before.sent;
    println!("AppendEntries of {entries} x {entry_bytes} B entries, loopback, {elapsed:.1} s:");
    println!("  messages/s       {:>12.0}", msgs as f64 / elapsed);
    println!("  entries/s        {:>12.0}", ents as f64 / elapsed);
    println!("  payload MB/s     {:>12.1}", payload as f64 / elapsed / 1e6);
    println!("  wire MB/s        {:>12.1}", wire as f64 / elapsed / 1e6);
    println!("  messages/write   {:>12.1}", sent as f64 / writes.max(1) as f64);
    println!("  dropped          {:>12}", a_after.dropped());
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
