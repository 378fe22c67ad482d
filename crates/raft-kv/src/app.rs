//! The binary's commands: run a node, the console, the cluster status table, or a local cluster.

use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use engine::{Driver, DriverConfig};
use storage::{DirLock, LogOptions};

use crate::cli::{ClientArgs, Mode, ServerArgs, StatusArgs};
use crate::cluster::Group;
use crate::identity::{self, StartAs};
use crate::metrics::collector::StatusCollector;
use crate::metrics::fs::MeteredFs;
use crate::metrics::http::Endpoint;
use crate::metrics::Metrics;
use crate::node::{self, Input, NodeHandle, NodeOptions, Placement};
use crate::server::{self, ServerContext, ServerOptions};
use crate::transport::{Transport, TransportConfig, TransportTuning};

/// Resolves `host:port` to the address to bind, preferring IPv4 (`localhost` -> 127.0.0.1). An
/// IPv6 address may be written with or without brackets (`[::1]`, `::1`).
pub fn bind_addr(host: &str, port: u16) -> Result<SocketAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> =
        (bare, port).to_socket_addrs().with_context(|| format!("cannot resolve host '{host}'"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("host '{host}' resolves to no address"))
}

/// Splits `host:port` (`[v6]:port` for IPv6).
fn split_host_port(addr: &str) -> Result<(&str, u16)> {
    let bad = || anyhow!("bad address '{addr}': expected host:port (e.g. 0.0.0.0:9100 or [::]:9100)");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(bad());
    }
    Ok((host, port))
}

/// Refuses a member host that is an IPv6 address without brackets: `host:port` built from it
/// would be ambiguous.
fn check_hosts(group: &Group) -> Result<()> {
    for m in &group.members {
        if m.host.contains(':') && !m.host.starts_with('[') {
            bail!(
                "member {}: write the IPv6 address {} in brackets ({},[{}],{},{})",
                m.name,
                m.host,
                m.name,
                m.host,
                m.server_port,
                m.core_port
            );
        }
    }
    Ok(())
}

fn bind(host: &str, port: u16, what: &str) -> Result<StdTcpListener> {
    let addr = bind_addr(host, port)?;
    // SO_REUSEADDR: a node restarted after kill -9 can take its ports back at once.
    let l = crate::transport::bind_listener(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("{what} port {addr} is already in use (is another node or program running there?)")
        } else {
            anyhow!("cannot listen on {what} port {addr}: {e}")
        }
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A session id unique to this process start.
fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// `raft-kv server`: runs one node until SIGTERM / Ctrl-C.
pub fn run_server(args: ServerArgs) -> Result<()> {
    let mut group = Group::parse(&args.group.group).map_err(|e| anyhow!(e))?;
    group.member(&args.id).map_err(|e| anyhow!(e))?;
    if args.mode == Mode::Standalone {
        group = group.only(&args.id).map_err(|e| anyhow!(e))?;
    }
    if args.tick_ms == 0 || args.heartbeat_ticks == 0 || args.election_ticks <= args.heartbeat_ticks {
        bail!("need --tick-ms > 0 and 0 < --heartbeat-ticks < --election-ticks");
    }
    if args.log_segment_bytes < 4096 {
        bail!("--log-segment-bytes must be at least 4KiB, not {}", args.log_segment_bytes);
    }
    let me = group.member(&args.id).map_err(|e| anyhow!(e))?.clone();

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let _lock = DirLock::acquire(&args.data_dir).map_err(|e| anyhow!("{e}"))?;
    let start_as =
        if args.standby || args.mode == Mode::Standby { StartAs::Standby } else { StartAs::Member };
    let mut identity =
        identity::open(&args.data_dir, &args.id, &group, start_as, "").map_err(|e| anyhow!(e))?;
    if identity.upgraded {
        tracing::info!(
            "upgraded {} to version 2 (node ids and cluster id kept)",
            args.data_dir.join(identity::META_FILE).display()
        );
    }

    check_hosts(&group)?;
    let users = args.security.users()?;
    let client_tls = args.security.client_tls()?;
    let cluster_token = args.security.cluster_token()?;
    let peer_tls = args.security.peer_tls()?;
    let listen_host = args.listen.as_deref().unwrap_or(&me.host);
    crate::security::announce(
        listen_host,
        &users,
        client_tls.is_some(),
        cluster_token.is_some(),
        peer_tls.is_some(),
    );
    let mut client_listener = bind(listen_host, me.server_port, "server")?;
    let mut core_listener = bind(listen_host, me.core_port, "core")?;
    let (client_bound, core_bound) = (client_listener.local_addr()?, core_listener.local_addr()?);
    // --io-threads 0 (the default): one event loop runs the node loop, the client connections and
    // the peer links (see `node`); N > 0: N network threads and the node loop on a thread of its own.
    let (runtime, placement) = match args.io_threads {
        0 => (tokio::runtime::Builder::new_current_thread().enable_all().build()?, Placement::Task),
        n => (
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(n))
                .enable_all()
                .build()?,
            Placement::Thread,
        ),
    };
    if identity.is_waiting() {
        let standby = Standby {
            name: me.name.clone(),
            users: args.security.users()?,
            client_tls: client_tls.clone(),
            cluster_token: cluster_token.clone(),
            peer_tls: peer_tls.clone(),
            max_connections: args.max_connections,
            auth_timeout: Duration::from_millis(args.security.auth_timeout_ms.max(1)),
        };
        let Some((adoption, core)) =
            runtime.block_on(wait_as_standby(standby, client_listener, core_listener))?
        else {
            tracing::info!("stopped while waiting to be added");
            return Ok(());
        };
        identity.adopt(&args.data_dir, adoption.cluster_id, adoption.node_id).map_err(|e| anyhow!(e))?;
        tracing::info!(
            "standby {} added to cluster {:016x} as node id {} (by node {})",
            me.name,
            adoption.cluster_id,
            adoption.node_id,
            adoption.by
        );
        core_listener = core;
        // The waiting server gave its listener up: take the port again (SO_REUSEADDR).
        client_listener = bind(listen_host, me.server_port, "server")?;
    }
    let (Some(id), Some(cluster_id)) = (identity.node_id, identity.cluster_id) else {
        bail!("data directory {} has no node id yet", args.data_dir.display());
    };
    let metrics_listener = match &args.metrics_listen {
        Some(addr) => {
            let (host, port) = split_host_port(addr)?;
            Some(bind(host, port, "metrics")?)
        }
        None => None,
    };

    let mut raft = raft::Config::new(id, identity.bootstrap.voters());
    raft.heartbeat_ticks = args.heartbeat_ticks;
    raft.election_ticks = args.election_ticks;
    raft.seed = random_session();
    raft.read_mode = args.read_mode;
    raft.lease_drift_ticks =
        u32::try_from(args.lease_drift_ms.div_ceil(args.tick_ms.max(1))).unwrap_or(u32::MAX);
    raft.validate().map_err(|e| anyhow!(e))?;
    let ticks = |ms: u64| ms.div_ceil(args.tick_ms).max(1);
    let snapshot = args.snapshot.to_config(args.tick_ms).map_err(|e| anyhow!(e))?;
    let max_frame = crate::wire::max_frame_for_chunks(snapshot.chunk_size);
    let config = DriverConfig {
        raft,
        session: random_session(),
        request_timeout_ticks: ticks(args.request_timeout_ms),
        forward_retry_ticks: ticks(1000),
        limbo_ticks: ticks(600_000),
        write_window: engine::DEFAULT_WRITE_WINDOW,
        log: LogOptions {
            sync: !args.unsafe_no_fsync,
            segment_size: args.log_segment_bytes,
            preallocate: args.log_preallocate_bytes,
            ..LogOptions::default()
        },
        snapshot,
        deferred_sync: args.sync_thread,
        record_applies: false,
    };
    if args.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: acknowledged writes can be lost if the machine crashes");
    }
    let started = std::time::Instant::now();
    // Metrics exist only with --metrics-listen (made now: the file system times the fsyncs).
    let metrics = metrics_listener.is_some().then(Metrics::new);
    let fs = metrics.as_ref().map_or_else(MeteredFs::plain, |m| MeteredFs::new(m.node.fsync_seconds.clone()));
    // Before the driver applies anything: redis.call inside scripts parses with it.
    crate::command::script::install();
    let driver = Driver::open_with(fs, &args.data_dir, config, identity.bootstrap.clone())
        .with_context(|| format!("cannot open the log in {}", args.data_dir.display()))?;
    let (snap_index, snap_bytes) = driver.snapshot().map_or((0, 0), |(m, len)| (m.index, *len));
    let first = driver.node().first_index();
    let last = driver.node().last_index();
    tracing::info!(
        snapshot_index = snap_index,
        snapshot_bytes = snap_bytes,
        log_entries = (last + 1).saturating_sub(first),
        keys = driver.kv().len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "node {} (id {id}) recovered up to index {last} (term {}) from {}: snapshot up to {snap_index}, log {first}..={last}, in {:?}",
        me.name,
        driver.node().term(),
        args.data_dir.display(),
        started.elapsed()
    );

    warn_if_gc_differs(&group, driver.node().membership(), start_as == StartAs::Standby);
    // The peers are the members of the latest configuration in the log (the transport follows it).
    let peers = node::peer_addresses(driver.node().membership());
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        let handle = NodeHandle::new(tx.clone());

        let (peer_tx, mut peer_rx) = tokio::sync::mpsc::channel(65_536);
        // A link silent for the longest election timeout is closed and dialled again, so a healed
        // partition is noticed within about 1.5 of them (see `transport`).
        let longest_election = Duration::from_millis(args.tick_ms * u64::from(args.election_ticks) * 2);
        let transport = Transport::start_with(
            TransportConfig {
                id,
                cluster_id,
                listener: core_listener,
                peers,
                queue_capacity: 65_536,
                max_frame,
                cluster_token,
                peer_tls: peer_tls.clone(),
                advertised: me.core_addr(),
            },
            TransportTuning::for_election_timeout(longest_election),
            peer_tx,
        )
        .await
        .context("cannot start the peer transport")?;
        // Peer messages go to the node thread (waiting for room in its queue).
        let bridge = handle.clone();
        tokio::spawn(async move {
            while let Some(msg) = peer_rx.recv().await {
                if !bridge.deliver(msg).await {
                    break;
                }
            }
        });
        let tick = Duration::from_millis(args.tick_ms);
        let node_thread = node::spawn(
            driver,
            transport.clone(),
            rx,
            &handle,
            NodeOptions {
                tick,
                shutdown_grace: Duration::from_secs(2),
                data_dir: args.data_dir.clone(),
                metrics: metrics.as_ref().map(|m| m.node.clone()),
            },
            placement,
        )?;

        let (shutdown_tx, shutdown_rx) = tokio::sync::broadcast::channel(1);
        let node_running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let metrics = match (metrics_listener, metrics) {
            (Some(listener), Some(metrics)) => {
                metrics.register_collector(StatusCollector {
                    node: handle.clone(),
                    transport: transport.clone(),
                    group: group.clone(),
                });
                let endpoint = Arc::new(Endpoint {
                    metrics: metrics.clone(),
                    node: handle.clone(),
                    node_running: node_running.clone(),
                });
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
                tokio::spawn(crate::metrics::http::serve(listener, endpoint, shutdown_tx.subscribe()));
                Some(metrics)
            }
            _ => None,
        };
        let node_handle = handle.clone();
        let ctx = Arc::new(ServerContext {
            node: handle,
            name: me.name.clone(),
            group: group.clone(),
            next_client: AtomicI64::new(1),
            metrics,
            auth: crate::auth::session::Gate::new(users)
                .with_auth_timeout(Duration::from_millis(args.security.auth_timeout_ms.max(1))),
            cursors: Default::default(),
        });
        let listener = tokio::net::TcpListener::from_std(client_listener)?;
        let server = tokio::spawn(server::serve(
            listener,
            ctx,
            ServerOptions { max_connections: args.max_connections, tls: client_tls.clone() },
            shutdown_rx,
        ));
        tracing::info!(
            "node {} serving clients on {} and peers on {} (bound to {client_bound} and {core_bound}; cluster {})",
            me.name,
            me.server_addr(),
            me.core_addr(),
            group.names()
        );

        // Run until a signal, or until the node thread stops on its own (a fatal error).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // SIGHUP: read the certificates again (connections accepted afterwards use them).
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reload_tls = client_tls.clone();
        let reload_peer_tls = peer_tls.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &reload_tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: client-port TLS certificate reloaded"),
                        Err(e) => tracing::error!("SIGHUP: certificate reload failed, keeping the old one: {e}"),
                    },
                    None => tracing::info!("SIGHUP: no client-port TLS certificates to reload"),
                }
                if let Some(tls) = &reload_peer_tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: peer TLS certificates reloaded"),
                        Err(e) => tracing::error!("SIGHUP: peer certificate reload failed, keeping the old ones: {e}"),
                    }
                }
            }
        });
        let node_done = node_thread;
        tokio::pin!(node_done);
        let result = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            r = &mut node_done => Some(r),
        };
        if result.is_none() {
            // A planned stop: a leader hands over first, so the cluster need not wait out an
            // election timeout (a rolling restart causes no election).
            hand_over(&node_handle, Duration::from_millis(args.tick_ms * u64::from(args.election_ticks) * 3)).await;
        }
        node_running.store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(());
        let _ = tx.send(Input::Shutdown);
        let joined = match result {
            Some(r) => r,
            None => node_done.await,
        };
        let _ = server.await;
        transport.shutdown().await;
        match joined {
            Ok(Ok(())) => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
            Ok(Err(fatal)) => Err(anyhow!("node stopped: {fatal}")),
            Err(_) => Err(anyhow!("the node loop panicked")),
        }
    })
}

/// Says clearly when `-gc` disagrees with the cluster's membership (recorded in the log and
/// snapshots): the membership wins, `-gc` only bootstraps a new cluster. A standby's `-gc` (its
/// own entry) is not compared.
fn warn_if_gc_differs(group: &Group, membership: &raft::Membership, standby: bool) {
    if standby || membership.is_empty() {
        return;
    }
    let Ok(members) = crate::cluster::members_of(membership) else { return };
    let mut differences = Vec::new();
    for m in &group.members {
        match members.iter().find(|(_, r, _)| r.name == m.name) {
            None => differences.push(format!("{} is not a member", m.name)),
            Some((_, r, _)) if r != m => differences.push(format!("{} is recorded as {r}, not {m}", m.name)),
            Some(_) => {}
        }
    }
    for (_, r, _) in &members {
        if !group.members.iter().any(|m| m.name == r.name) {
            differences.push(format!("{} is a member not in -gc", r.name));
        }
    }
    if !differences.is_empty() {
        let list: Vec<String> = members
            .iter()
            .map(|(_, r, s)| {
                format!("{r} ({})", if *s == raft::Suffrage::Voter { "voter" } else { "learner" })
            })
            .collect();
        tracing::warn!(
            "-gc differs from the cluster's membership ({}); following the membership, which is: {}",
            differences.join("; "),
            list.join(" ")
        );
    }
}

/// If this node leads, hands leadership to the most caught-up other voter and waits (at most
/// `limit`) until it leads. Failures are logged: the node stops anyway.
async fn hand_over(node: &NodeHandle, limit: Duration) {
    let st = node.status();
    if st.role != "leader" {
        return;
    }
    let target = st
        .members
        .iter()
        .filter(|m| m.voter && m.id != st.id)
        .max_by_key(|m| (m.match_index.unwrap_or(0), std::cmp::Reverse(m.id)));
    let Some(target) = target else { return };
    let started = std::time::Instant::now();
    let permit = node.reserve().await;
    let answer = node.submit(engine::Request::TransferLeader(target.id), permit);
    match tokio::time::timeout(limit, answer).await {
        Ok(Ok(Ok(engine::kv::Reply::Ok))) => tracing::info!(
            "handed leadership to {} before stopping (in {:?})",
            target.name(),
            started.elapsed()
        ),
        Ok(Ok(other)) => {
            tracing::warn!("could not hand leadership to {} before stopping: {other:?}", target.name())
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("no handover to {} within {limit:?}; stopping anyway", target.name())
        }
    }
}

/// What a standby needs while it waits.
struct Standby {
    name: String,
    users: crate::auth::Users,
    client_tls: Option<Arc<crate::tls::ServerTls>>,
    cluster_token: Option<crate::auth::token::ClusterToken>,
    peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
    max_connections: usize,
    auth_timeout: Duration,
}

/// A standby waits to be added: its client port answers INFO (role `standby`) and refuses the rest,
/// its core port waits for the leader that adds it ([`crate::transport::standby`]). Returns who
/// adopted it and the core listener back, or None on SIGTERM / Ctrl-C.
async fn wait_as_standby(
    standby: Standby,
    client: StdTcpListener,
    core: StdTcpListener,
) -> Result<Option<(crate::transport::standby::Adoption, StdTcpListener)>> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
    let handle = NodeHandle::new(tx);
    handle.state.store(crate::node::STANDBY, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut s) = handle.status.lock() {
        s.standby = true;
        s.role = "standby";
    }
    let ctx = Arc::new(ServerContext {
        node: handle,
        name: standby.name.clone(),
        group: Group { members: Vec::new() },
        next_client: AtomicI64::new(1),
        metrics: None,
        auth: crate::auth::session::Gate::new(standby.users).with_auth_timeout(standby.auth_timeout),
        cursors: Default::default(),
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::broadcast::channel(1);
    let server = tokio::spawn(server::serve(
        tokio::net::TcpListener::from_std(client)?,
        ctx,
        ServerOptions { max_connections: standby.max_connections, tls: standby.client_tls },
        shutdown_rx,
    ));
    let core = tokio::net::TcpListener::from_std(core)?;
    tracing::info!(
        "standby {} waiting to be added to a cluster (raft-kv member add on a member); serving INFO only",
        standby.name
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let adoption = tokio::select! {
        a = crate::transport::standby::wait_to_be_adopted(
            &core, standby.cluster_token, standby.peer_tls, Duration::from_secs(2)) => Some(a),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    let _ = shutdown_tx.send(());
    let _ = server.await;
    match adoption {
        Some(a) => Ok(Some((a, core.into_std()?))),
        None => Ok(None),
    }
}

/// `raft-kv client`: the console.
pub fn run_client(args: ClientArgs) -> Result<i32> {
    args.security.install()?;
    let group = Group::parse(&args.group.group).map_err(|e| anyhow!(e))?;
    check_hosts(&group)?;
    let members: Vec<crate::console::Member> = group
        .members
        .iter()
        .map(|m| crate::console::Member { id: m.name.clone(), addr: m.server_addr() })
        .collect();
    let first = match &args.id {
        Some(name) => {
            group.member(name).map_err(|e| anyhow!(e))?;
            members.iter().position(|m| &m.id == name).unwrap_or(0)
        }
        None => 0,
    };
    let summary = crate::console::run(members, first, &crate::console::Options::default())?;
    Ok(summary.exit_code())
}

/// `raft-kv status`: one row per member; members that do not answer are shown as down.
pub fn run_status(args: StatusArgs) -> Result<i32> {
    args.security.install()?;
    let group = Group::parse(&args.group.group).map_err(|e| anyhow!(e))?;
    check_hosts(&group)?;
    let rows = crate::status::collect(&group, Duration::from_millis(1000));
    print!("{}", crate::status::render(&rows));
    Ok(if rows.iter().any(|r| r.info.is_some()) { 0 } else { 1 })
}

/// Checks that `dir` is usable for a local cluster's data.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
