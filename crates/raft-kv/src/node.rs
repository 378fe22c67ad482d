//! The node thread: runs the [`Driver`] (Raft core + WAL + KV state machine) on a dedicated OS thread,
//! so fsync never blocks the network tasks.
//!
//! Loop: wait for input (client requests, peer messages) until the next tick is due; drain everything
//! else already queued (this is the group commit: every request that arrived during the last fsync
//! is persisted by the next single fsync); tick if due; let the driver persist, then hand its
//! messages to the transport, then deliver its answers. Status for `INFO` is published after every
//! round.
//!
//! Invariants: answers and messages leave only after `Driver::process` returned, i.e. after the
//! state they depend on is durable; every client request gets exactly one answer (the driver's, or
//! an error at shutdown).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{Driver, FatalError, PeerMessage, Request, RequestError, Response};
use raft::{NodeId, Role};
use storage::StdFs;
use tokio::sync::oneshot;

use crate::transport::Transport;

/// Input to the node thread.
pub enum Input {
    /// A client request and where to send its answer.
    Client(Request, oneshot::Sender<Response>),
    /// A message from a peer.
    Peer(PeerMessage),
    /// Stop: answer what can be answered within the grace period, then exit.
    Shutdown,
}

/// A snapshot of the node's state, for `INFO` and `raft-kv status`.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// This node's Raft id.
    pub id: NodeId,
    /// Role name.
    pub role: &'static str,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Number of keys.
    pub keys: usize,
    /// Requests waiting for an answer.
    pub pending: usize,
    /// Leader only: (peer, match index).
    pub peers: Vec<(NodeId, u64)>,
}

/// Handle to the node thread.
#[derive(Clone)]
pub struct NodeHandle {
    /// Input channel.
    pub tx: Sender<Input>,
    /// The latest published status.
    pub status: Arc<Mutex<Status>>,
}

impl NodeHandle {
    /// Submits a request; the answer arrives on the returned receiver.
    pub fn submit(&self, request: Request) -> oneshot::Receiver<Response> {
        let (tx, rx) = oneshot::channel();
        // If the node thread is gone the sender is dropped and the receiver reports it.
        let _ = self.tx.send(Input::Client(request, tx));
        rx
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Node thread settings.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Length of one tick.
    pub tick: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

/// Starts the node thread.
pub fn spawn(
    driver: Driver<StdFs>,
    transport: Transport,
    rx: Receiver<Input>,
    status: Arc<Mutex<Status>>,
    opts: NodeOptions,
) -> std::io::Result<JoinHandle<Result<(), FatalError>>> {
    std::thread::Builder::new().name("raft-node".into()).spawn(move || {
        NodeLoop { driver, transport, rx, status, opts, waiters: HashMap::new(), next: 1 }.run()
    })
}

struct NodeLoop {
    driver: Driver<StdFs>,
    transport: Transport,
    rx: Receiver<Input>,
    status: Arc<Mutex<Status>>,
    opts: NodeOptions,
    waiters: HashMap<u64, oneshot::Sender<Response>>,
    next: u64,
}

impl NodeLoop {
    fn run(mut self) -> Result<(), FatalError> {
        let mut next_tick = Instant::now() + self.opts.tick;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(input) => {
                    if self.handle(input) {
                        shutdown_deadline.get_or_insert(now + self.opts.shutdown_grace);
                    }
                    for _ in 0..65_536 {
                        match self.rx.try_recv() {
                            Ok(input) => {
                                if self.handle(input) {
                                    shutdown_deadline.get_or_insert(now + self.opts.shutdown_grace);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    shutdown_deadline.get_or_insert(now);
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.driver.tick();
                next_tick += self.opts.tick;
                if next_tick < now {
                    // We fell far behind (a long fsync): do not replay a burst of ticks.
                    next_tick = now + self.opts.tick;
                }
            }
            let transport = &self.transport;
            self.driver.process_with(&mut |msgs| transport.send(msgs))?;
            self.transport.send(self.driver.take_messages());
            for (id, response) in self.driver.take_answers() {
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(response);
                }
            }
            self.publish();
            if let Some(deadline) = shutdown_deadline {
                if self.waiters.is_empty() || Instant::now() >= deadline {
                    for (_, w) in self.waiters.drain() {
                        let _ = w.send(Err(RequestError::Timeout));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Handles one input; returns true if it asks to shut down.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Client(request, reply) => {
                let id = self.next;
                self.next += 1;
                self.waiters.insert(id, reply);
                self.driver.submit(id, request);
                false
            }
            Input::Peer(msg) => {
                self.driver.receive(msg);
                false
            }
            Input::Shutdown => true,
        }
    }

    fn publish(&self) {
        let node = self.driver.node();
        let peers =
            node.peers().iter().map(|&p| (p, node.progress(p).map_or(0, |pr| pr.match_index))).collect();
        let status = Status {
            id: node.id(),
            role: node.role().as_str(),
            term: node.term(),
            leader: node.leader(),
            commit: node.commit(),
            applied: self.driver.kv().applied_index(),
            last_index: node.last_index(),
            keys: self.driver.kv().len(),
            pending: self.waiters.len(),
            peers: if node.role() == Role::Leader { peers } else { Vec::new() },
        };
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }
}
