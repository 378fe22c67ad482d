//! The peer transport: carries [`PeerMessage`]s between the nodes of a cluster over TCP, in the
//! frames of [`crate::wire`].
//!
//! # Shape
//! - **Outbound**: one TCP connection per peer, owned by one task ([`outbound`]). The task dials
//!   (resolving the peer's name again at every dial, so a peer whose address changed is found)
//!   with exponential backoff and jitter, sets `TCP_NODELAY`, exchanges handshakes, then drains the
//!   peer's queue: every message waiting in the queue (up to a batch limit) is encoded into one
//!   buffer and written with one `write_all`, so a busy leader sends many messages per syscall. On any
//!   error it drops the connection and dials again. When the task has nothing unwritten, the caller
//!   of [`Transport::send`] writes the messages into the connection itself ([`lane`]: saves a thread
//!   wake-up per message batch); either way messages go out on one connection, in send order.
//! - **Inbound**: an accept loop ([`inbound`]) with one task per connection. A connection must open
//!   with a valid handshake (magic, protocol version, cluster id, a known peer id) within the
//!   handshake timeout; after that every frame is decoded and handed to the `inbound` channel with
//!   `send().await`, so a slow consumer slows the peer down through TCP instead of growing memory.
//!   A newer connection from the same peer replaces an older one (the old one is closed), so a peer
//!   that restarted without a clean close does not leave half-open connections behind.
//! - **Handshake**: both sides send a [`Handshake`](crate::wire::Handshake) and check the other's.
//!   The acceptor answers any peer that presented the right magic, even one it refuses, so the dialer
//!   can log *why* it was refused (other cluster, other version, or it dialed the wrong node: the
//!   dialer checks that the node id that answers is the one it meant to reach). A stranger (e.g. a
//!   Redis client on the core port) gets no answer: its connection is closed with a warning.
//!
//! # Liveness: a silent link is closed and redialled
//! A partition that drops packets silently does not break a TCP connection: the sender's writes
//! land in its socket buffer and TCP retransmits with a doubling timer, so after the partition heals
//! the connection resumes only at the next retransmission, as long after the heal as the cut had
//! lasted (1.2 s after a 2 s cut, 24.8 s after a 30 s cut, measured before this existed). So both
//! ends of every connection send a keepalive ([`crate::wire::KEEPALIVE_FRAME`], four bytes) every
//! `keepalive_interval`, whatever else they send, and each end closes a connection on which it has
//! heard nothing at all for `idle_timeout` (the server sets about one election timeout). The dialer
//! then dials again with a fresh connection (and a fresh name lookup), every dial bounded by
//! `handshake_timeout`, with backoff up to `backoff_max` between attempts: once the network heals,
//! a new connection is up within about `handshake_timeout + backoff_max`, whatever the length of
//! the cut. Keepalives are exchanged only with peers whose handshake announced them (older nodes
//! get the old behaviour, see [`crate::wire`]). Time spent waiting for room in the inbound channel
//! (backpressure from the node thread) does not count as silence.
//!
//! # A peer that is away costs no memory
//! Messages wait in a peer's queue only while its link is up or while the first dial after the
//! link went down is under way (a restarted peer takes them). Once a dial fails, the peer is
//! *away*: its queue and held-back snapshot chunks are discarded, and [`Transport::send`] drops
//! every message for it at once, until a connection is established again; all of these are counted
//! in [`PeerStats::dropped_away`]. Raft needs none of them: the leader resends from the follower's
//! match index, and heartbeats, votes and snapshot chunks are repeated on their own timers.
//!
//! # Invariants
//! - [`Transport::send`] never blocks and never waits for the network: it writes with a
//!   non-blocking `try_write` into an idle connection, or `try_send`s into a bounded queue per peer
//!   (`queue_capacity` messages) and counts what it must drop. It may be called from
//!   any thread, with or without a tokio runtime (the driver thread calls it).
//! - Memory is bounded per peer: `queue_capacity` queued messages plus one batch in flight plus
//!   snapshot chunks held back (about `outbound::MAX_HELD_CHUNK_BYTES`), and on the read side one
//!   frame of at most `max_frame` bytes.
//! - Per ordered pair of nodes, messages arrive in the order they were sent, possibly with gaps
//!   (dropped when a queue was full, lost in a failed write, or with their connection), except that
//!   other messages may overtake snapshot chunks (chunks keep their order among themselves; see
//!   [`outbound`]). Raft tolerates loss and reordering; the transport never duplicates a message.
//! - A bad peer (garbage, wrong cluster, oversized frame) costs its own connection only.
//! - After [`Transport::shutdown`] returns, every task has ended and every socket is closed.
//!
//! # Peers follow the membership
//! The peers are those of the cluster's membership, not of the command line: the node thread calls
//! [`Transport::set_peers`] with the members' core addresses whenever the latest configuration in
//! its log changes. A new member gets an outbound task (and its connections are accepted from
//! then on); a member that left loses its task, its queue and its inbound connection's welcome
//! (connections already accepted from it end when it closes them or goes silent).
//!
//! # Standby nodes
//! A node waiting to be added has no node id and no cluster id yet. It does not run a transport:
//! [`standby::wait_to_be_adopted`] accepts the first dialer that presents a valid handshake naming
//! the node id it wants to reach (`Handshake.peer_id`, which every dialer sends), proves and checks
//! the cluster token if there is one, and returns that cluster id and node id for the node to record
//! before it starts. The dialer (the leader, once the change that adds the node is in its log) sees a
//! connection that closes and dials again; by then the node runs its transport.

mod inbound;
mod lane;
mod outbound;
pub mod standby;
mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use engine::PeerMessage;
use raft::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use util::RateLimit;

/// Binds a TCP listener (for the core port, or any server port) that a restarted node can bind again
/// at once: on Unix it sets `SO_REUSEADDR`. Without it, Linux refuses to bind a port for up to a
/// minute while connections of the previous incarnation linger in TIME_WAIT (a node killed with
/// SIGKILL leaves such connections); the flag only helps if every incarnation sets it. Needs no
/// tokio runtime.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Transport settings.
#[derive(Debug)]
pub struct TransportConfig {
    /// This node's id (never 0).
    pub id: NodeId,
    /// The cluster's id; connections from other clusters are refused.
    pub cluster_id: u64,
    /// The bound listener peer connections are accepted on (bound by the caller, so it can pick a
    /// free port or report a busy one before anything starts).
    pub listener: std::net::TcpListener,
    /// The peers and their core addresses (`host:port`, resolved at every dial). An entry for this
    /// node itself is ignored, so the whole cluster map may be passed.
    pub peers: BTreeMap<NodeId, String>,
    /// Capacity of each peer's outbound queue, in messages; a message sent to a full queue is dropped.
    pub queue_capacity: usize,
    /// Maximum body length of a frame, in bytes, both ways ([`crate::wire::DEFAULT_MAX_FRAME`] is a
    /// good value). A larger outgoing message is dropped; a larger incoming frame closes the
    /// connection.
    pub max_frame: usize,
    /// The cluster token: when set, every connection proves it both ways in the handshake
    /// ([`crate::auth::token`]) and a peer without it is refused; `None`: the handshake of nodes
    /// without a token.
    pub cluster_token: Option<crate::auth::token::ClusterToken>,
    /// Mutual TLS against the cluster CA on every peer connection ([`crate::peer_tls`]); `None`:
    /// plain TCP.
    pub peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
    /// This node's core address as peers reach it (`host:port`), sent in the handshake so that a
    /// node that just joined can answer it (see [`Transport::set_peers`]); may be empty.
    pub advertised: String,
}

/// Timing knobs, with defaults fit for a LAN (see [`Transport::start_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportTuning {
    /// Limit for dialing plus the handshake exchange, and for an accepted connection's handshake.
    pub handshake_timeout: Duration,
    /// A batch not written within this time closes the connection (a peer that stopped reading).
    pub write_timeout: Duration,
    /// First delay between dial attempts.
    pub backoff_min: Duration,
    /// Largest delay between dial attempts.
    pub backoff_max: Duration,
    /// How often each end of a connection sends a keepalive.
    pub keepalive_interval: Duration,
    /// A connection on which nothing at all was heard for this long is closed (and the dialer
    /// dials again). Must exceed `keepalive_interval`; a peer announcing a slower keepalive is given
    /// three of its intervals.
    pub idle_timeout: Duration,
}

impl Default for TransportTuning {
    /// 1 s handshake timeout, 10 s write timeout, dial backoff 10 ms .. 500 ms, a keepalive every
    /// 100 ms and an idle timeout of 1 s.
    fn default() -> Self {
        TransportTuning {
            handshake_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            keepalive_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(1),
        }
    }
}

impl TransportTuning {
    /// Settings for a cluster whose longest election timeout is `election`: a link silent for that
    /// long is closed, keepalives go five times as often, each dial (connect + handshake) gets half
    /// of it and the dial backoff tops out at a fifth, so that while a peer is unreachable a fresh
    /// dial starts at least every 0.7 election timeouts, and a healed link is back within about that.
    pub fn for_election_timeout(election: Duration) -> Self {
        let election = election.max(Duration::from_millis(10));
        TransportTuning {
            handshake_timeout: election / 2,
            backoff_max: (election / 5).max(Duration::from_millis(10)),
            keepalive_interval: election / 5,
            idle_timeout: election,
            ..TransportTuning::default()
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration is unusable.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The listener could not be used.
    #[error("cannot use the given listener: {0}")]
    Listener(std::io::Error),
}

/// Counters of one peer (see [`Transport::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's configured address.
    pub addr: String,
    /// True while an outbound connection to the peer is established (handshake done).
    pub connected: bool,
    /// Messages waiting in the outbound queue now (at most `queue_capacity`).
    pub queued: usize,
    /// Messages written to the peer (the write returned; delivery is not confirmed).
    pub sent: u64,
    /// Frame bytes written to the peer, headers included.
    pub sent_bytes: u64,
    /// Batches written (one `write_all` each); `sent / writes` is the mean batch size.
    pub writes: u64,
    /// Messages dropped because the queue was full.
    pub dropped_full: u64,
    /// Messages lost otherwise: in a failed write, larger than `max_frame`, or sent after shutdown.
    pub dropped_lost: u64,
    /// Messages discarded because the peer was away (a dial failed and no connection was
    /// established since): see the module docs.
    pub dropped_away: u64,
    /// Connections (ours or the peer's) closed because nothing was heard on them for the idle
    /// timeout.
    pub silent_closes: u64,
    /// Outbound connections established (handshake done); reconnects are `connects - 1`.
    pub connects: u64,
    /// Failed dial or handshake attempts.
    pub connect_failures: u64,
    /// Messages received from the peer and handed to the inbound channel.
    pub received: u64,
    /// Frame bytes received from the peer after the handshake, headers included.
    pub received_bytes: u64,
}

impl PeerStats {
    /// All messages dropped or lost.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_lost + self.dropped_away
    }

    /// Connections established after the first.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

/// A snapshot of the transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per peer.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Inbound connections refused (bad handshake, unknown peer, garbage, timeout).
    pub rejected_connections: u64,
    /// Inbound connections closed for a protocol violation after the handshake (malformed or
    /// oversized frame).
    pub closed_bad_frames: u64,
    /// Well-formed inbound messages dropped: unknown kind (a newer peer), or wrong `from`/`to`.
    pub invalid_messages: u64,
    /// Messages given to [`Transport::send`] for a node that is not a configured peer (or is self).
    pub misrouted: u64,
}

/// Live counters of one peer, shared by the handle, its outbound task and its inbound connections.
#[derive(Debug, Default)]
struct PeerCounters {
    connected: AtomicBool,
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    writes: AtomicU64,
    dropped_full: AtomicU64,
    dropped_lost: AtomicU64,
    dropped_away: AtomicU64,
    silent_closes: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
}

/// Live transport-wide counters.
#[derive(Debug, Default)]
struct GlobalCounters {
    rejected_connections: AtomicU64,
    closed_bad_frames: AtomicU64,
    invalid_messages: AtomicU64,
    misrouted: AtomicU64,
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One configured peer, as the handle sees it.
#[derive(Debug)]
struct Peer {
    /// The configured address.
    addr: String,
    /// The outbound queue (its receiver belongs to the peer's outbound task).
    queue: mpsc::Sender<PeerMessage>,
    /// The connection shared with the outbound task, for direct writes (see [`lane`]).
    lane: Arc<lane::Lane>,
    /// The peer's counters.
    counters: Arc<PeerCounters>,
    /// Limits errors about messages too large to send.
    oversize_log: RateLimit,
}

/// What every clone of the handle shares.
#[derive(Debug)]
struct Inner {
    /// This node's id.
    id: NodeId,
    /// Frame limit for outgoing messages.
    max_frame: usize,
    /// The bound listen address.
    local_addr: SocketAddr,
    /// The peers (never this node); changed by [`Transport::set_peers`].
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    /// The known peers' counters, as the inbound side sees them (a handshake from any other id is
    /// refused).
    known: Arc<RwLock<BTreeMap<NodeId, Arc<PeerCounters>>>>,
    /// What a new peer's outbound task is made from.
    template: PeerTemplate,
    /// Transport-wide counters.
    global: Arc<GlobalCounters>,
    /// Set to true to stop every task; dropping it (last handle gone) stops them too.
    shutdown: watch::Sender<bool>,
    /// The accept loop, awaited by [`Transport::shutdown`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The outbound task of each peer, aborted when the peer leaves, awaited by
    /// [`Transport::shutdown`].
    outbound: Mutex<BTreeMap<NodeId, JoinHandle<()>>>,
    /// The runtime the tasks run on ([`Transport::set_peers`] may be called from any thread).
    runtime: tokio::runtime::Handle,
    /// True while this node is not a member of the configuration it knows (it just joined): a
    /// handshake from an unknown node of the cluster that says its core address adds that peer.
    learning: AtomicBool,
    /// Limits warnings about misrouted messages.
    misrouted_log: RateLimit,
}

/// What every peer's outbound task shares (see [`Transport::set_peers`]).
#[derive(Debug)]
struct PeerTemplate {
    advertised: String,
    cluster_id: u64,
    queue_capacity: usize,
    tuning: TransportTuning,
    cluster_token: Option<crate::auth::token::ClusterToken>,
    peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
    shutdown: watch::Receiver<bool>,
}

/// A handle to a running transport; clones share it.
#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// What the inbound side needs to know (shared by the accept loop and its connections).
#[derive(Debug)]
struct InboundContext {
    id: NodeId,
    cluster_id: u64,
    max_frame: usize,
    handshake_timeout: Duration,
    /// How often to send keepalives to a peer that announced them.
    keepalive_interval: Duration,
    /// Silence after which a connection from a peer that announced keepalives is closed.
    idle_timeout: Duration,
    /// Counters of the known peers; a handshake from any other id is refused (unless learning).
    peers: Arc<RwLock<BTreeMap<NodeId, Arc<PeerCounters>>>>,
    /// The transport, for learning a peer from its handshake (set once it exists).
    learner: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>>,
    global: Arc<GlobalCounters>,
    inbound: mpsc::Sender<PeerMessage>,
    /// The cluster token, if the cluster has one.
    cluster_token: Option<crate::auth::token::ClusterToken>,
    /// Peer TLS, if used.
    peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
}

impl Transport {
    /// Starts accepting peer connections on the listener and one outbound task per peer, with the
    /// default [`TransportTuning`]. Decoded inbound messages go to `inbound`. Must be called within a
    /// tokio runtime, which then runs the transport's tasks.
    pub async fn start(
        cfg: TransportConfig,
        inbound: mpsc::Sender<PeerMessage>,
    ) -> Result<Transport, TransportError> {
        Self::start_with(cfg, TransportTuning::default(), inbound).await
    }

    /// [`Transport::start`] with explicit timing knobs.
    pub async fn start_with(
        cfg: TransportConfig,
        tuning: TransportTuning,
        inbound: mpsc::Sender<PeerMessage>,
    ) -> Result<Transport, TransportError> {
        if cfg.id == 0 {
            return Err(TransportError::Config("node id 0 is reserved".into()));
        }
        if cfg.queue_capacity == 0 {
            return Err(TransportError::Config("queue_capacity must be at least 1".into()));
        }
        if cfg.max_frame < crate::wire::MAX_HANDSHAKE_FRAME {
            return Err(TransportError::Config(format!(
                "max_frame must be at least {} bytes",
                crate::wire::MAX_HANDSHAKE_FRAME
            )));
        }
        if tuning.backoff_min.is_zero() || tuning.backoff_max < tuning.backoff_min {
            return Err(TransportError::Config("backoff must satisfy 0 < backoff_min <= backoff_max".into()));
        }
        if tuning.keepalive_interval.is_zero() || tuning.idle_timeout <= tuning.keepalive_interval {
            return Err(TransportError::Config(
                "keepalives must satisfy 0 < keepalive_interval < idle_timeout".into(),
            ));
        }
        if let Some(&bad) = cfg.peers.keys().find(|&&id| id == 0) {
            return Err(TransportError::Config(format!("peer id {bad} is reserved")));
        }
        cfg.listener.set_nonblocking(true).map_err(TransportError::Listener)?;
        let listener = tokio::net::TcpListener::from_std(cfg.listener).map_err(TransportError::Listener)?;
        let local_addr = listener.local_addr().map_err(TransportError::Listener)?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let global = Arc::new(GlobalCounters::default());
        let known = Arc::new(RwLock::new(BTreeMap::new()));
        let learner = Arc::new(std::sync::OnceLock::new());
        let ctx = InboundContext {
            learner: learner.clone(),
            id: cfg.id,
            cluster_id: cfg.cluster_id,
            max_frame: cfg.max_frame,
            handshake_timeout: tuning.handshake_timeout,
            keepalive_interval: tuning.keepalive_interval,
            idle_timeout: tuning.idle_timeout,
            peers: known.clone(),
            global: global.clone(),
            inbound,
            cluster_token: cfg.cluster_token.clone(),
            peer_tls: cfg.peer_tls.clone(),
        };
        let transport = Transport {
            inner: Arc::new(Inner {
                learning: AtomicBool::new(false),
                id: cfg.id,
                max_frame: cfg.max_frame,
                local_addr,
                peers: RwLock::new(BTreeMap::new()),
                known,
                template: PeerTemplate {
                    advertised: cfg.advertised,
                    cluster_id: cfg.cluster_id,
                    queue_capacity: cfg.queue_capacity,
                    tuning,
                    cluster_token: cfg.cluster_token,
                    peer_tls: cfg.peer_tls,
                    shutdown: shutdown_rx.clone(),
                },
                global,
                shutdown,
                tasks: Mutex::new(Vec::new()),
                outbound: Mutex::new(BTreeMap::new()),
                runtime: tokio::runtime::Handle::current(),
                misrouted_log: RateLimit::new(Duration::from_secs(10)),
            }),
        };
        let _ = learner.set(Arc::downgrade(&transport.inner));
        transport.set_peers(&cfg.peers, false);
        let accept = tokio::spawn(inbound::accept_loop(listener, Arc::new(ctx), shutdown_rx));
        transport.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(accept);
        tracing::info!(id = cfg.id, %local_addr, peers = cfg.peers.len(), "peer transport listening");
        Ok(transport)
    }

    /// Makes `peers` (id -> core address `host:port`) the set of peers: starts an outbound task for
    /// each new one (and for one whose address changed), stops those of peers not listed, and
    /// accepts connections from the listed ones only. An entry for this node is ignored, as is id 0.
    /// With `learning` (this node is not in the configuration it knows: it just joined and has not
    /// received its membership yet), peers are only added, never removed, and a node of the cluster
    /// that dials this one and says its core address in the handshake becomes a peer too: that is
    /// how a new node reaches the leader that added it. Callable from any thread.
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, String>, learning: bool) {
        self.inner.learning.store(learning, Ordering::Relaxed);
        self.inner.update_peers(peers, !learning);
    }
}

impl Inner {
    /// A node of the cluster dialled with its core address `addr`: adds it as a peer if this node
    /// is learning (see [`Transport::set_peers`]). Returns whether it is a peer now.
    fn learn(&self, id: NodeId, addr: &str) -> bool {
        if !self.learning.load(Ordering::Relaxed) || addr.is_empty() || id == self.id || id == 0 {
            return false;
        }
        tracing::info!(peer = id, addr, "learned a peer from its handshake (this node just joined)");
        self.update_peers(&BTreeMap::from([(id, addr.to_string())]), false);
        true
    }

    fn update_peers(&self, peers: &BTreeMap<NodeId, String>, remove: bool) {
        let inner = self;
        let mut map = inner.peers.write().unwrap_or_else(|e| e.into_inner());
        let mut tasks = inner.outbound.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = inner.known.write().unwrap_or_else(|e| e.into_inner());
        let wanted: BTreeMap<NodeId, &String> =
            peers.iter().filter(|(&id, _)| id != inner.id && id != 0).map(|(&id, a)| (id, a)).collect();
        let gone: Vec<NodeId> =
            map.iter().filter(|(id, p)| wanted.get(id) != Some(&&p.addr)).map(|(&id, _)| id).collect();
        for id in gone.into_iter().filter(|id| remove || wanted.contains_key(id)) {
            map.remove(&id);
            known.remove(&id);
            if let Some(task) = tasks.remove(&id) {
                task.abort();
            }
            tracing::info!(peer = id, "no longer a peer");
        }
        for (id, addr) in wanted {
            if map.contains_key(&id) {
                continue;
            }
            let t = &inner.template;
            let (tx, rx) = mpsc::channel(t.queue_capacity);
            let counters = Arc::new(PeerCounters::default());
            let lane = Arc::new(lane::Lane::default());
            let task = outbound::OutboundTask {
                id: inner.id,
                cluster_id: t.cluster_id,
                peer: id,
                addr: addr.clone(),
                advertised: t.advertised.clone(),
                max_frame: inner.max_frame,
                handshake_timeout: t.tuning.handshake_timeout,
                write_timeout: t.tuning.write_timeout,
                backoff_min: t.tuning.backoff_min,
                backoff_max: t.tuning.backoff_max,
                keepalive_interval: t.tuning.keepalive_interval,
                idle_timeout: t.tuning.idle_timeout,
                counters: counters.clone(),
                lane: lane.clone(),
                cluster_token: t.cluster_token.clone(),
                peer_tls: t.peer_tls.clone(),
            };
            tasks.insert(id, inner.runtime.spawn(task.run(rx, t.shutdown.clone())));
            let oversize_log = RateLimit::new(Duration::from_secs(10));
            known.insert(id, counters.clone());
            map.insert(id, Arc::new(Peer { addr: addr.clone(), queue: tx, lane, counters, oversize_log }));
            tracing::debug!(peer = id, %addr, "peer added");
        }
    }
}

impl Transport {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the transport accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends each message to its destination peer and returns at once: written directly into the
    /// peer's connection when it is idle (see [`lane`]), else queued for the peer's outbound task.
    /// A message whose peer queue is full is dropped and counted (`dropped_full`), as is one for a
    /// peer that is away (`dropped_away`, see the module docs); one for an
    /// unknown node or this node is dropped and counted (`misrouted`). Never blocks (a direct write
    /// is a non-blocking `try_write`); callable from any thread.
    pub fn send(&self, msgs: Vec<PeerMessage>) {
        let peers = self.inner.peers.read().unwrap_or_else(|e| e.into_inner());
        let mut by_peer: BTreeMap<NodeId, Vec<PeerMessage>> = BTreeMap::new();
        for msg in msgs {
            let to = msg.to();
            if !peers.contains_key(&to) {
                bump(&self.inner.global.misrouted);
                if let Some(suppressed) = self.inner.misrouted_log.allow() {
                    tracing::warn!(
                        to,
                        suppressed,
                        "dropping a message for a node that is not a configured peer"
                    );
                }
                continue;
            }
            by_peer.entry(to).or_default().push(msg);
        }
        // The followers of a leader get the same new entries: encoded once (see `wire::append`).
        let mut entries = crate::wire::EntriesCache::default();
        for (to, msgs) in by_peer {
            let Some(peer) = peers.get(&to) else { continue };
            let encode = |msg: PeerMessage, buf: &mut bytes::BytesMut| {
                let kind = outbound::describe(&msg);
                match crate::wire::encode_message_with(msg, &mut entries, self.inner.max_frame, buf) {
                    Ok(()) => true,
                    Err(e) => {
                        bump(&peer.counters.dropped_lost);
                        if let Some(suppressed) = peer.oversize_log.allow() {
                            tracing::error!(peer = to, kind, error = %e, suppressed,
                                "dropping a message too large to send");
                        }
                        false
                    }
                }
            };
            peer.lane.send(msgs, &peer.queue, &peer.counters, encode);
        }
    }

    /// The number of messages waiting in `peer`'s outbound queue (`None` if `peer` is not a
    /// configured peer). Cheaper than [`Transport::stats`], for callers that pace themselves.
    pub fn queued(&self, peer: NodeId) -> Option<usize> {
        let peers = self.inner.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.get(&peer).map(|p| p.queue.max_capacity() - p.queue.capacity())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let peers = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&id, p)| {
                let c = &p.counters;
                let stats = PeerStats {
                    addr: p.addr.clone(),
                    connected: c.connected.load(Ordering::Relaxed),
                    queued: p.queue.max_capacity() - p.queue.capacity(),
                    sent: load(&c.sent),
                    sent_bytes: load(&c.sent_bytes),
                    writes: load(&c.writes),
                    dropped_full: load(&c.dropped_full),
                    dropped_lost: load(&c.dropped_lost),
                    dropped_away: load(&c.dropped_away),
                    silent_closes: load(&c.silent_closes),
                    connects: load(&c.connects),
                    connect_failures: load(&c.connect_failures),
                    received: load(&c.received),
                    received_bytes: load(&c.received_bytes),
                };
                (id, stats)
            })
            .collect();
        let g = &self.inner.global;
        TransportStats {
            peers,
            rejected_connections: load(&g.rejected_connections),
            closed_bad_frames: load(&g.closed_bad_frames),
            invalid_messages: load(&g.invalid_messages),
            misrouted: load(&g.misrouted),
        }
    }

    /// Stops accepting, closes every connection and waits for every task to end. Messages still
    /// queued are discarded. Other clones of the handle keep working as far as `send` (which then
    /// counts every message as lost) and `stats` go.
    pub async fn shutdown(self) {
        // Fails only if no receiver is left, i.e. every task has already ended.
        let _ = self.inner.shutdown.send(true);
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let outbound = std::mem::take(&mut *self.inner.outbound.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.extend(outbound.into_values());
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "peer transport task failed");
            }
        }
        tracing::info!(id = self.inner.id, "peer transport stopped");
    }
}
