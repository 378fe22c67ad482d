//! The client-facing server: the Redis protocol (RESP2, RESP3 after `HELLO 3`) on each node's
//! server port.
//!
//! Layout (after mini-redis): a listener task accepts connections (bounded by a semaphore); each
//! connection has a reader task (bytes -> [`Frame`] -> [`Request`] -> engine request submitted to the
//! node thread) and a writer task that answers strictly in request order, batching every answer that
//! is ready into one write. The bounded channel between them caps a connection's pipeline, so a
//! client that never reads its answers cannot grow our memory.
//!
//! Any node accepts any command: the driver forwards writes to the leader and serves reads through
//! the leader's read index.
//!
//! Order within a pipeline: every operation is linearizable on its own, and a connection's
//! pipeline keeps Redis's order between reads and writes: a read that follows a not-yet-answered
//! write of the same connection (or a write that follows an unanswered read) is submitted only once
//! the earlier requests are answered, so `SET k v` + `GET k` pipelined always reads `v`. Writes of
//! one connection are proposed in order; only a write retried after a leader change can be applied
//! after a later write of the same pipeline. `RAFT.SNAPSHOT` is ordered like a read: it is submitted
//! once the connection's earlier writes are answered, so its snapshot covers them. A malformed RESP stream gets a protocol error and that connection is
//! closed; nothing else is affected. Shutdown: a broadcast stops the listener and every reader;
//! writers finish answering what was already submitted.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use engine::kv::{Command as KvCommand, Query, Reply, SetCondition as KvSetCondition, TxItem, Watch};
use engine::{Request as EngineRequest, RequestError, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::auth::session::Screen;
use crate::cluster::Group;
use crate::command::{self, ClientRequest, CommandError, Request, SetCondition};
use crate::metrics::{CommandKind, Metrics, RequestTimer};
use crate::node::NodeHandle;
use crate::resp::{encode_as, Frame, Limits, Parser, Protocol};

mod answer;

use answer::{reply_frame, scan_items, scan_query, Shape};

/// Most requests one connection may have in flight (pipelined).
const MAX_PIPELINE: usize = 4096;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// TLS on the client port (`crate::tls`): every connection must complete a handshake within
    /// `tls::HANDSHAKE_TIMEOUT` before a byte of RESP is read.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// What every connection shares.
pub struct ServerContext {
    /// The node thread.
    pub node: NodeHandle,
    /// This node's member name.
    pub name: String,
    /// The group.
    pub group: Group,
    /// Next client id.
    pub next_client: AtomicI64,
    /// Metrics (`--metrics-listen`); `None`: none are collected.
    pub metrics: Option<Arc<Metrics>>,
    /// Users and authentication (`crate::auth`).
    pub auth: crate::auth::session::Gate,
    /// `SCAN` / `HSCAN` cursors issued by this node (`crate::scan`).
    pub cursors: Arc<crate::scan::Cursors>,
}

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    opts: ServerOptions,
    mut shutdown: broadcast::Receiver<()>,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.recv() => return,
        };
        let (mut stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if let Some(m) = &ctx.metrics {
                m.client_connections_refused.inc();
            }
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            continue;
        };
        if let Some(m) = &ctx.metrics {
            m.client_connections_accepted.inc();
            m.client_connections.inc();
        }
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.resubscribe();
        let tls = opts.tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let metrics = ctx.metrics.clone();
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
            match tls {
                None => {
                    let (rd, wr) = stream.into_split();
                    handle_connection(rd, wr, peer, local, ctx, shutdown).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let (rd, wr) = tokio::io::split(tls_stream);
                            handle_connection(rd, wr, peer, local, ctx, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake refused: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            if let Some(m) = metrics {
                m.client_connections.dec();
            }
            drop(permit);
        });
    }
}

/// An answer in the making, in request order.
enum Pending {
    /// Known now.
    Frame(Frame, Protocol),
    /// Comes from the node thread.
    Engine(oneshot::Receiver<Response>, Protocol, Kind, Option<RequestTimer>, Shape),
    /// To submit once every earlier request of the connection is answered (see the module docs).
    Deferred(EngineRequest, Protocol, Kind, Option<RequestTimer>, Shape),
    /// Known now; close the connection after writing it.
    Close(Frame, Protocol),
}

/// Whether an engine request reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// Engine requests of one connection submitted and not yet answered, by kind.
#[derive(Default)]
struct Outstanding {
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Outstanding {
    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
        }
    }
}

/// Per-connection state kept by the reader.
struct Conn {
    id: i64,
    outstanding: Arc<Outstanding>,
    protocol: Protocol,
    name: Bytes,
    peer: String,
    local: String,
    /// Who the connection is authenticated as.
    auth: crate::auth::session::ConnAuth,
    /// The transaction being queued (between `MULTI` and `EXEC`), if any.
    multi: Option<Vec<TxItem>>,
    /// A command was refused while queueing: `EXEC` answers `EXECABORT`.
    multi_dirty: bool,
    /// Queued commands that did not parse (syntax, integers): their errors and positions in the
    /// `EXEC` reply.
    multi_errors: Vec<(usize, String)>,
    /// Queued `HSCAN`s with invalid options: their positions among the queued items (each
    /// queued as a `TYPE` read) and their errors, answered from the key's type at `EXEC`.
    multi_invalid: Vec<(usize, String)>,
    /// Watched keys (`WATCH`), until `EXEC`, `DISCARD` or `UNWATCH`.
    watch_keys: Vec<Bytes>,
    /// Answers of `WATCH` reads not yet taken (the reader waits for them before an `EXEC`).
    watch_pending: Vec<oneshot::Receiver<Response>>,
    /// The lowest index a `WATCH` read.
    watch_index: Option<u64>,
    /// A `WATCH` read failed: the next `EXEC` cannot be checked and answers nil.
    watch_failed: bool,
}

/// Most commands one transaction may queue.
const MAX_QUEUED: usize = 65_536;

impl Conn {
    /// Forgets the watched keys.
    fn unwatch(&mut self) {
        self.watch_keys.clear();
        self.watch_pending.clear();
        self.watch_index = None;
        self.watch_failed = false;
    }

    /// Takes the answers of this connection's `WATCH` reads (they come before an `EXEC`).
    async fn settle_watches(&mut self) {
        for rx in std::mem::take(&mut self.watch_pending) {
            match rx.await {
                Ok(Ok(Reply::Int(index))) => {
                    let index = index.max(0) as u64;
                    self.watch_index = Some(self.watch_index.map_or(index, |w| w.min(index)));
                }
                _ => self.watch_failed = true,
            }
        }
    }
}

async fn handle_connection<R, W>(
    mut rd: R,
    wr: W,
    peer: String,
    local: String,
    ctx: Arc<ServerContext>,
    mut shutdown: broadcast::Receiver<()>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Pending>(MAX_PIPELINE);
    let outstanding = Arc::new(Outstanding::default());
    let writer =
        tokio::spawn(write_answers(wr, rx, ctx.node.clone(), outstanding.clone(), ctx.metrics.clone()));
    let mut conn = Conn {
        id: ctx.next_client.fetch_add(1, Ordering::Relaxed),
        outstanding,
        protocol: Protocol::Resp2,
        name: Bytes::new(),
        auth: ctx.auth.connection(&peer),
        peer,
        local,
        multi: None,
        multi_dirty: false,
        multi_errors: Vec::new(),
        multi_invalid: Vec::new(),
        watch_keys: Vec::new(),
        watch_pending: Vec::new(),
        watch_index: None,
        watch_failed: false,
    };
    let mut parser = Parser::requests(Limits::server());
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // A connection that must authenticate has this long to do it (strangers cannot hold slots).
    let mut auth_deadline =
        conn.auth.user.is_none().then(|| Box::pin(tokio::time::sleep(ctx.auth.auth_timeout())));
    'read: loop {
        // Drain every complete request already buffered.
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(frame)) => {
                    // AUTH, HELLO ... AUTH, ACL and the NOAUTH rule (crate::auth::session).
                    let (frame, name) = match ctx.auth.screen(&mut conn.auth, frame).await {
                        Screen::Pass { frame, name } => (frame, name),
                        Screen::Answer(answer) => {
                            if tx.send(Pending::Frame(answer, conn.protocol)).await.is_err() {
                                break 'read;
                            }
                            continue;
                        }
                    };
                    if !conn.watch_pending.is_empty() && name.eq_ignore_ascii_case(b"exec") {
                        // The WATCH answers are ahead of this EXEC in the writer's queue.
                        conn.settle_watches().await;
                    }
                    // A place in the node thread's queue first (back-pressure when it is behind).
                    let permit = ctx.node.reserve().await;
                    let pending = dispatch(frame, &name, &mut conn, &ctx, permit);
                    let close = matches!(pending, Pending::Close(..));
                    if tx.send(pending).await.is_err() || close {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // A broken stream: answer with the protocol error and close this connection.
                    let _ = tx.send(Pending::Close(e.to_frame(), conn.protocol)).await;
                    break 'read;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if conn.auth.user.is_some() {
            auth_deadline = None;
        }
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = shutdown.recv() => break,
            _ = async {
                match auth_deadline.as_mut() {
                    Some(d) => d.as_mut().await,
                    None => std::future::pending().await,
                }
            }, if auth_deadline.is_some() => {
                tracing::debug!(peer = %conn.peer, "closing a connection that did not authenticate in time");
                let _ = tx.send(Pending::Close(Frame::error(crate::auth::session::AUTH_TIMEOUT_ERROR), conn.protocol)).await;
                break;
            }
        };
        match n {
            Ok(0) | Err(_) => break, // Closed (possibly mid-request): nothing else to do.
            Ok(_) => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Writes answers in request order, batching whatever is ready into one write.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Pending>,
    node: NodeHandle,
    outstanding: Arc<Outstanding>,
    metrics: Option<Arc<Metrics>>,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            let (frame, protocol, close) = match pending {
                Pending::Frame(f, p) => (f, p, false),
                Pending::Close(f, p) => (f, p, true),
                Pending::Deferred(request, p, kind, timer, shape) => {
                    // Every earlier request is answered: submit now and wait.
                    if !out.is_empty() {
                        if wr.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    let permit = node.reserve().await;
                    let response = node.submit(request, permit).await.unwrap_or(Err(RequestError::Timeout));
                    outstanding.counter(kind).fetch_sub(1, Ordering::AcqRel);
                    if let (Some(t), Some(m)) = (timer, &metrics) {
                        t.finish(m, &response);
                    }
                    (shape.frame(response), p, false)
                }
                Pending::Engine(mut answer, p, kind, timer, shape) => {
                    let response = match answer.try_recv() {
                        Ok(r) => Some(r),
                        Err(oneshot::error::TryRecvError::Empty) => None,
                        Err(oneshot::error::TryRecvError::Closed) => Some(Err(RequestError::Timeout)),
                    };
                    let response = match response {
                        Some(r) => r,
                        None => {
                            // Not ready: first send what is ready, then wait.
                            if !out.is_empty() {
                                if wr.write_all(&out).await.is_err() {
                                    return;
                                }
                                out.clear();
                            }
                            answer.await.unwrap_or(Err(RequestError::Timeout))
                        }
                    };
                    outstanding.counter(kind).fetch_sub(1, Ordering::AcqRel);
                    if let (Some(t), Some(m)) = (timer, &metrics) {
                        t.finish(m, &response);
                    }
                    (shape.frame(response), p, false)
                }
            };
            encode_as(&frame, protocol, &mut out);
            if close {
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
                return;
            }
            next = rx.try_recv().ok();
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if out.capacity() > 1 << 20 {
            out = BytesMut::with_capacity(16 * 1024);
        }
    }
}

/// Copies a key or value out of the connection's read buffer (it is kept in the log and the map).
fn own(b: Bytes) -> Bytes {
    Bytes::copy_from_slice(&b)
}

/// Turns one request frame into its (pending) answer; `permit` is the place in the node thread's
/// queue a request submitted now takes.
fn dispatch(
    frame: Frame,
    name: &[u8],
    conn: &mut Conn,
    ctx: &ServerContext,
    permit: OwnedSemaphorePermit,
) -> Pending {
    let p = conn.protocol;
    let mut request = match Request::parse(frame) {
        Ok(r) => r,
        Err(e) => {
            if let Some(items) = &conn.multi {
                if !matches!(
                    e,
                    CommandError::UnknownCommand { .. }
                        | CommandError::WrongArity(_)
                        | CommandError::NotARequest
                ) {
                    // Redis finds these when the transaction runs: the error is EXEC's answer to
                    // this command, the others still run.
                    let at = items.len() + conn.multi_errors.len();
                    conn.multi_errors.push((at, e.to_string()));
                    return Pending::Frame(Frame::simple("QUEUED"), p);
                }
            }
            conn.multi_dirty |= conn.multi.is_some();
            return Pending::Frame(e.to_frame(), p);
        }
    };
    if let Err(refusal) = conn.auth.permit(name, &mut request) {
        conn.multi_dirty |= conn.multi.is_some();
        return Pending::Frame(refusal, p);
    }
    let outstanding = conn.outstanding.clone();
    let permit = std::cell::Cell::new(Some(permit));
    // Taken by the one engine request this request becomes (Cell: the closures below share it).
    let timer =
        std::cell::Cell::new(ctx.metrics.as_ref().map(|_| RequestTimer::start(command_kind(&request))));
    // The shape of the one engine request's answer (Cell, as the timer).
    let shape = std::cell::Cell::new(Shape::Plain);
    let engine = |r: EngineRequest, kind: Kind| {
        let other = match kind {
            Kind::Read => Kind::Write,
            Kind::Write => Kind::Read,
        };
        let defer = outstanding.counter(other).load(Ordering::Acquire) > 0;
        outstanding.counter(kind).fetch_add(1, Ordering::AcqRel);
        match permit.take() {
            Some(permit) if !defer => {
                Pending::Engine(ctx.node.submit(r, permit), p, kind, timer.take(), shape.take())
            }
            // Deferred (or, never, a second request of one frame): submitted by the writer.
            _ => Pending::Deferred(r, p, kind, timer.take(), shape.take()),
        }
    };
    let standby = ctx.node.is_standby() || ctx.node.is_removed();
    let write = |c: KvCommand| {
        if standby {
            standby_refusal(p)
        } else {
            engine(EngineRequest::Write(c), Kind::Write)
        }
    };
    let read =
        |q: Query| if standby { standby_refusal(p) } else { engine(EngineRequest::Read(q), Kind::Read) };
    if conn.multi.is_some() {
        let request = match request {
            Request::Scan(mut scan) if scan.invalid.is_some() && scan.key.is_some() => {
                let (Some(e), Some(key)) = (scan.invalid.take(), scan.key.clone()) else {
                    return Pending::Frame(Frame::error("ERR internal: HSCAN without a key"), p);
                };
                let at = conn.multi.as_ref().map_or(0, Vec::len);
                let answer = queue_item(TxItem::Read(Query::Type { key }), conn);
                if conn.multi.as_ref().map_or(0, Vec::len) > at {
                    conn.multi_invalid.push((at, e.to_string()));
                }
                return Pending::Frame(answer.unwrap_or_else(|| Frame::simple("QUEUED")), p);
            }
            Request::Scan(scan) => match scan_query(ctx, *scan) {
                Ok(q) => Request::KvRead(q),
                Err(e) => {
                    // As Redis: the error is EXEC's answer to this command.
                    let at = conn.multi.as_ref().map_or(0, Vec::len) + conn.multi_errors.len();
                    conn.multi_errors.push((at, e.to_string()));
                    return Pending::Frame(Frame::simple("QUEUED"), p);
                }
            },
            other => other,
        };
        if let Some(answer) = queue(request, conn) {
            return Pending::Frame(answer, p);
        }
        // EXEC of a clean transaction: one write.
        let items = conn.multi.take().unwrap_or_default();
        let keys = std::mem::take(&mut conn.watch_keys);
        let watch = (!keys.is_empty()).then(|| Watch { index: conn.watch_index.unwrap_or(0), keys });
        conn.unwatch();
        let scans = scan_items(&items);
        let invalid = std::mem::take(&mut conn.multi_invalid);
        shape.set(Shape::Exec(std::mem::take(&mut conn.multi_errors), scans, invalid, ctx.cursors.clone()));
        return write(KvCommand::Multi { watch, items });
    }
    let request = match data_item(request) {
        Ok(TxItem::Write(c)) => return write(c),
        Ok(TxItem::Read(q)) => return read(q),
        Err(other) => other,
    };
    match request {
        Request::Multi => {
            conn.multi = Some(Vec::new());
            conn.multi_dirty = false;
            conn.multi_errors.clear();
            conn.multi_invalid.clear();
            Pending::Frame(Frame::ok(), p)
        }
        Request::Exec => Pending::Frame(Frame::error("ERR EXEC without MULTI"), p),
        Request::Discard => Pending::Frame(Frame::error("ERR DISCARD without MULTI"), p),
        Request::Watch(keys) => {
            let (tx, rx) = oneshot::channel();
            conn.watch_keys.extend(keys.into_iter().map(own));
            conn.watch_pending.push(rx);
            shape.set(Shape::Watch(tx));
            read(Query::AppliedIndex)
        }
        Request::Unwatch => {
            conn.unwatch();
            Pending::Frame(Frame::ok(), p)
        }
        Request::Scan(mut scan) if scan.invalid.is_some() && scan.key.is_some() => {
            let (Some(e), Some(key)) = (scan.invalid.take(), scan.key.clone()) else {
                return Pending::Frame(Frame::error("ERR internal: HSCAN without a key"), p);
            };
            // The cursor is checked first, as Redis parses it before looking at the key.
            if let Err(e) = scan_query(ctx, *scan) {
                return Pending::Frame(e.to_frame(), p);
            }
            shape.set(Shape::ScanInvalid(*e));
            read(Query::Type { key })
        }
        Request::Scan(scan) => {
            let key = scan.key.clone();
            match scan_query(ctx, *scan) {
                Ok(q) => {
                    shape.set(Shape::Scan(ctx.cursors.clone(), key));
                    read(q)
                }
                Err(e) => Pending::Frame(e.to_frame(), p),
            }
        }
        Request::Time => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let secs = Frame::Bulk(Bytes::from(now.as_secs().to_string()));
            let micros = Frame::Bulk(Bytes::from(now.subsec_micros().to_string()));
            Pending::Frame(Frame::Array(vec![secs, micros]), p)
        }
        Request::Ping(None) => Pending::Frame(Frame::simple("PONG"), p),
        Request::Ping(Some(msg)) | Request::Echo(msg) => Pending::Frame(Frame::Bulk(msg), p),
        Request::Quit => Pending::Close(Frame::ok(), p),
        Request::Select => Pending::Frame(Frame::ok(), p),
        Request::Hello(hello) => {
            if let Some(name) = hello.setname {
                conn.name = name;
            }
            if let Some(protocol) = hello.protocol {
                conn.protocol = protocol;
            }
            let role = if ctx.node.status().role == "leader" { "master" } else { "replica" };
            Pending::Frame(command::hello_reply(conn.id, role, conn.protocol), conn.protocol)
        }
        Request::Client(c) => Pending::Frame(
            match c {
                ClientRequest::SetName(name) => {
                    conn.name = name;
                    Frame::ok()
                }
                ClientRequest::GetName => {
                    if conn.name.is_empty() {
                        Frame::Null
                    } else {
                        Frame::Bulk(conn.name.clone())
                    }
                }
                ClientRequest::Id => Frame::Integer(conn.id),
                ClientRequest::Info => {
                    command::client_info_reply(conn.id, &conn.peer, &conn.local, &conn.name, conn.protocol)
                }
                ClientRequest::SetInfo { .. } => Frame::ok(),
            },
            p,
        ),
        Request::Command(c) => Pending::Frame(command::command_reply(&c), p),
        Request::ConfigGet(patterns) => Pending::Frame(command::config_get_reply(&patterns), p),
        Request::Help(container) => Pending::Frame(command::help_reply(container), p),
        Request::Info(sections) => Pending::Frame(Frame::Bulk(Bytes::from(info_text(ctx, &sections))), p),
        // Takes a snapshot on this node (not the leader's): answered with the index of a durable
        // snapshot covering everything this node had applied (arity checked by the parser).
        Request::Admin { name, .. } if name == "raft.snapshot" && standby => standby_refusal(p),
        Request::Admin { name, .. } if name == "raft.snapshot" => engine(EngineRequest::Snapshot, Kind::Read),
        Request::Admin { name, args } if name == "raft.member" || name == "raft.transfer" => {
            let Some(permit) = permit.take() else {
                return Pending::Frame(Frame::error("ERR one request per frame"), p);
            };
            match crate::admin::handle(&name, &args, &ctx.node, permit) {
                crate::admin::Admin::Now(reply) => Pending::Frame(reply_frame(reply), p),
                crate::admin::Admin::Later(answer) => {
                    outstanding.counter(Kind::Read).fetch_add(1, Ordering::AcqRel);
                    Pending::Engine(answer, p, Kind::Read, None, Shape::Plain)
                }
            }
        }
        Request::Admin { name, .. } => {
            Pending::Frame(Frame::error(format!("ERR unknown administrative command '{name}'")), p)
        }
        // Data requests were mapped by data_item above.
        Request::Get(_)
        | Request::Set(_)
        | Request::Del(_)
        | Request::Exists(_)
        | Request::MGet(_)
        | Request::MSet(_)
        | Request::IncrBy { .. }
        | Request::Append { .. }
        | Request::StrLen(_)
        | Request::DbSize
        | Request::KvWrite(_)
        | Request::KvRead(_) => Pending::Frame(Frame::error("ERR internal: unmapped data request"), p),
    }
}

/// The state-machine command or query of a data request (keys and values copied out of the
/// connection's buffer); any other request back as it is.
pub(crate) fn data_item(request: Request) -> Result<TxItem, Request> {
    let w = TxItem::Write;
    let r = TxItem::Read;
    Ok(match request {
        Request::Get(key) => r(Query::Get { key: own(key) }),
        Request::MGet(keys) => r(Query::MGet { keys: keys.into_iter().map(own).collect() }),
        Request::Exists(keys) => r(Query::Exists { keys: keys.into_iter().map(own).collect() }),
        Request::StrLen(key) => r(Query::Strlen { key: own(key) }),
        Request::DbSize => r(Query::DbSize),
        Request::Set(s) => w(KvCommand::Set {
            key: own(s.key),
            value: own(s.value),
            condition: match s.condition {
                SetCondition::Always => KvSetCondition::Always,
                SetCondition::IfAbsent => KvSetCondition::IfAbsent,
                SetCondition::IfPresent => KvSetCondition::IfPresent,
            },
            get: s.get,
        }),
        Request::Del(keys) => w(KvCommand::Del { keys: keys.into_iter().map(own).collect() }),
        Request::MSet(pairs) => {
            w(KvCommand::MSet { pairs: pairs.into_iter().map(|(k, v)| (own(k), own(v))).collect() })
        }
        Request::IncrBy { key, delta } => w(KvCommand::IncrBy { key: own(key), by: delta }),
        Request::Append { key, value } => w(KvCommand::Append { key: own(key), value: own(value) }),
        // Parsed with owned bytes already (command::expiry).
        Request::KvWrite(c) => w(c),
        Request::KvRead(q) => r(q),
        other => return Err(other),
    })
}

/// A request while `MULTI` queues (Redis' rules): the answer to send now, or `None` for an `EXEC`
/// of a clean transaction, which the caller proposes.
fn queue(request: Request, conn: &mut Conn) -> Option<Frame> {
    let refuse = |conn: &mut Conn, text: &str| {
        conn.multi_dirty = true;
        Some(Frame::error(text.to_owned()))
    };
    match request {
        Request::Multi => Some(Frame::error("ERR MULTI calls can not be nested")),
        Request::Watch(_) => Some(Frame::error("ERR WATCH inside MULTI is not allowed")),
        Request::Discard => {
            conn.multi = None;
            conn.multi_dirty = false;
            conn.multi_errors.clear();
            conn.multi_invalid.clear();
            conn.unwatch();
            Some(Frame::ok())
        }
        Request::Exec if conn.multi_dirty || conn.watch_failed => {
            let aborted = conn.multi_dirty;
            conn.multi = None;
            conn.multi_dirty = false;
            conn.multi_errors.clear();
            conn.multi_invalid.clear();
            conn.unwatch();
            Some(if aborted {
                Frame::error("EXECABORT Transaction discarded because of previous errors.")
            } else {
                Frame::NullArray // The WATCH read failed: as if a watched key had changed.
            })
        }
        Request::Exec => None,
        // Queued and a no-op: EXEC forgets the watched keys anyway.
        Request::Unwatch => Some(Frame::simple("QUEUED")),
        // Inside a transaction TIME is a read of the entry's log time (every replica agrees);
        // outside, the node's clock.
        Request::Time => queue_item(TxItem::Read(Query::Time), conn),
        other => match data_item(other) {
            Ok(item) => queue_item(item, conn),
            Err(_) => refuse(conn, "ERR this command cannot be used inside a transaction on raft-kv"),
        },
    }
}

/// Queues a data command of a transaction (a write is validated first, as Redis checks syntax
/// when queueing); the answer to send.
fn queue_item(item: TxItem, conn: &mut Conn) -> Option<Frame> {
    let refuse = |conn: &mut Conn, text: &str| {
        conn.multi_dirty = true;
        Some(Frame::error(text.to_owned()))
    };
    if let TxItem::Write(c) = &item {
        if let Err(e) = c.validate() {
            return refuse(conn, &e);
        }
    }
    let items = conn.multi.get_or_insert_with(Vec::new);
    if items.len() >= MAX_QUEUED {
        return refuse(conn, &format!("ERR a transaction holds at most {MAX_QUEUED} commands"));
    }
    items.push(item);
    Some(Frame::simple("QUEUED"))
}

/// What a standby answers to every command that needs the cluster.
fn standby_refusal(p: Protocol) -> Pending {
    Pending::Frame(Frame::error(STANDBY_REFUSAL), p)
}

/// What a standby (or a removed node) answers.
const STANDBY_REFUSAL: &str = "STANDBY this node is not a member of a cluster (a standby waiting to be added with raft-kv member add, or a removed node); it serves only INFO: use a member";

/// The metrics label of a request that goes to the node thread.
fn command_kind(request: &Request) -> CommandKind {
    match request {
        Request::Get(_) => CommandKind::Get,
        Request::MGet(_) => CommandKind::MGet,
        Request::Exists(_) => CommandKind::Exists,
        Request::StrLen(_) => CommandKind::StrLen,
        Request::DbSize => CommandKind::DbSize,
        Request::Set(_) => CommandKind::Set,
        Request::Del(_) => CommandKind::Del,
        Request::MSet(_) => CommandKind::MSet,
        Request::IncrBy { .. } => CommandKind::IncrBy,
        Request::Append { .. } => CommandKind::Append,
        Request::Admin { .. } => CommandKind::Snapshot,
        _ => CommandKind::Other,
    }
}

/// The `INFO` text: `server`, `raft` and `keyspace` sections (all by default).
pub fn info_text(ctx: &ServerContext, sections: &[Bytes]) -> String {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                let s = String::from_utf8_lossy(s).to_ascii_lowercase();
                s == name || s == "all" || s == "everything" || s == "default"
            })
    };
    let st = ctx.node.status();
    let name_of = |id: u64| st.name_of(id);
    let mut out = String::new();
    if want("server") {
        // The fields client libraries and tools read (redis-py's test setup reads arch_bits).
        out.push_str("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n");
        out.push_str(&format!(
            "os:{} {}\r\narch_bits:{}\r\n",
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS
        ));
        out.push_str("raft_kv_version:");
        out.push_str(env!("CARGO_PKG_VERSION"));
        out.push_str(&format!("\r\nprocess_id:{}\r\n\r\n", std::process::id()));
    }
    if want("raft") {
        out.push_str("# Raft\r\n");
        out.push_str(&format!("node_id:{}\r\n", ctx.name));
        out.push_str(&format!("role:{}\r\n", if st.standby { "standby" } else { st.role }));
        out.push_str(&format!("term:{}\r\n", st.term));
        out.push_str(&format!("leader:{}\r\n", st.leader.map(name_of).unwrap_or_default()));
        out.push_str(&format!("commit_index:{}\r\n", st.commit));
        out.push_str(&format!("applied_index:{}\r\n", st.applied));
        out.push_str(&format!("last_log_index:{}\r\n", st.last_index));
        out.push_str(&format!("pending_requests:{}\r\n", st.pending));
        out.push_str(&format!("log_first_index:{}\r\n", st.log_first_index));
        out.push_str(&format!("snapshot_index:{}\r\n", st.snapshot_index));
        out.push_str(&format!("snapshot_term:{}\r\n", st.snapshot_term));
        out.push_str(&format!("snapshot_bytes:{}\r\n", st.snapshot_bytes));
        out.push_str(&format!("snapshot_in_progress:{}\r\n", u8::from(st.snapshot_in_progress)));
        out.push_str(&format!("snapshot_sending:{}\r\n", st.snapshot_sending));
        out.push_str(&format!("snapshot_receiving:{}\r\n", u8::from(st.snapshot_receiving)));
        let stats = &st.snapshot_stats;
        out.push_str(&format!("snapshots_taken:{}\r\n", stats.taken));
        out.push_str(&format!("snapshots_installed:{}\r\n", stats.installed));
        out.push_str(&format!("snapshots_sent:{}\r\n", stats.sent));
        out.push_str(&format!("snapshot_chunks_sent:{}\r\n", stats.chunks_sent));
        out.push_str(&format!("snapshots_rejected:{}\r\n", stats.rejected));
        for (peer, matched) in &st.peers {
            out.push_str(&format!("peer_{}:match_index={matched}\r\n", name_of(*peer)));
        }
        let names = |voter: bool| {
            let names: Vec<&str> = st.members.iter().filter(|m| m.voter == voter).map(|m| m.name()).collect();
            names.join(",")
        };
        out.push_str(&format!("voters:{}\r\n", names(true)));
        out.push_str(&format!("learners:{}\r\n", names(false)));
        out.push_str(&format!("membership_index:{}\r\n", st.membership_index));
        for line in crate::admin::list(&st) {
            // name=D id=4 kind=... -> member_D:id=4,kind=...
            let mut words = line.split(' ');
            let name = words.next().and_then(|w| w.strip_prefix("name=")).unwrap_or("?");
            out.push_str(&format!("member_{name}:{}\r\n", words.collect::<Vec<_>>().join(",")));
        }
        out.push_str("\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        if st.keys > 0 {
            out.push_str(&format!("db0:keys={},expires={},avg_ttl=0\r\n", st.keys, st.expires));
        }
    }
    out
}
