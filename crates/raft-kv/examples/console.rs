//! Try the client console against any RESP server(s) before the real binary wires it in:
//!
//! ```text
//! cargo run -p raft-kv --example console -- A=127.0.0.1:6379 B=127.0.0.1:6380 [--first B]
//! ```
//!
//! Interactive on a terminal; reads commands from standard input otherwise.

use raft_kv::console::{run, Member, Options};

fn main() {
    let mut members = Vec::new();
    let mut first_id = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--first" {
            first_id = args.next();
        } else if let Some((id, addr)) = arg.split_once('=') {
            members.push(Member { id: id.to_string(), addr: addr.to_string() });
        } else {
            eprintln!("usage: console ID=HOST:PORT... [--first ID]");
            std::process::exit(2);
        }
    }
    let first = match first_id {
        Some(id) => match members.iter().position(|m| m.id == id) {
            Some(i) => i,
            None => {
                eprintln!("--first {id}: no such member");
                std::process::exit(2);
            }
        },
        None => 0,
    };
    match run(members, first, &Options::default()) {
        Ok(summary) => std::process::exit(summary.exit_code()),
        Err(e) => {
            eprintln!("console: {e}");
            std::process::exit(2);
        }
    }
}
