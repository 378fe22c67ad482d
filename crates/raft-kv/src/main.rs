//! The `raft-kv` binary: see `raft-kv --help`.

use std::process::ExitCode;

use raft_kv::cli::{self, Command};

/// mimalloc instead of glibc's malloc: the node, network and client threads allocate and free
/// many small buffers (requests, entries, messages) on different threads; glibc's per-thread
/// arenas then grow and shrink their heaps with `mprotect` on the hot path (about 500 calls per
/// second on a busy leader's node thread, measured with `perf trace -s`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args().collect()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Server(args) => raft_kv::app::run_server(args).map(|()| 0),
        Command::Client(args) => raft_kv::app::run_client(args),
        Command::Status(args) => raft_kv::app::run_status(args),
        Command::Local(args) => raft_kv::local::run(args),
        Command::Member(args) => raft_kv::member_cli::run_member(args),
        Command::TransferLeader(args) => raft_kv::member_cli::run_transfer(args),
        Command::Bench(args) => raft_kv::bench::run(args),
        Command::Certs(args) => raft_kv::certs::make(&args).map(|written| {
            for path in written {
                println!("{}", path.display());
            }
            0
        }),
        Command::Passwd => raft_kv::security::run_passwd().map(|()| 0),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("raft-kv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
