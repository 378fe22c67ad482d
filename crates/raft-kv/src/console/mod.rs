//! The interactive client console (the seed's client: `set a hello-world`, `get a`, `exit`).
//!
//! The console reads commands, one per line, split into words like `redis-cli` does (quotes and
//! escapes: `set k "hello world"`, `'single'`, `"\n"`, `"\x41"`), sends each as a Redis command
//! to one member of the cluster, and prints the reply like `redis-cli` (`OK`, `"value"`,
//! `(nil)`, `(integer) 5`, `(error) ...`, numbered arrays). Any Redis command the server knows
//! can be typed (`incr x`, `mget a b`, `info raft`); `help` lists them; `exit` or `quit` leaves.
//!
//! It connects first to the member it is given (the seed's `-i`), and fails over to the next
//! member when a member is unreachable, a request fails, or a member answers `TRYAGAIN` or
//! `CLUSTERDOWN` ([`Session`] has the rules). A write whose reply was lost is **not** resent,
//! because it may already have been applied: the console prints that its outcome is unknown.
//! Reads are resent, and so is a write answered `TRYAGAIN` (raft-kv's promise that it did not
//! execute it). Notices about failover go to standard error.
//!
//! When standard input is a terminal the console offers line editing and history (saved in the
//! history file, by default `~/.raft_kv_history`; problems with that file are ignored). When it
//! is not (a pipe or a file), it prints no prompt, prints each answer followed by a newline, and
//! [`run`] returns a [`Summary`] whose [`Summary::exit_code`] is non-zero if any command could not
//! be read or did not get an answer from the cluster.

mod format;
mod session;

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::command::{lookup, Request, COMMANDS};
use crate::resp::split_args;

pub use format::{format_reply, quote_into};
pub use session::{Outcome, Session};

/// One member of the cluster, as the console knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's id (`A`).
    pub id: String,
    /// The address of its client (Redis) port, `host:port` (`localhost:10001`).
    pub addr: String,
}

/// Console settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Longest wait for one TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for one reply (a write waits for Raft to commit it).
    pub request_timeout: Duration,
    /// Longest time one command may spend failing over before the console gives up on it.
    pub failover_budget: Duration,
    /// First pause after a full round of failed members.
    pub backoff_min: Duration,
    /// Longest pause between rounds.
    pub backoff_max: Duration,
    /// Where interactive history is kept; `None`: not kept.
    pub history_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            failover_budget: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            history_file: default_history_file(),
        }
    }
}

/// `$HOME/.raft_kv_history`, when `HOME` is set.
pub fn default_history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".raft_kv_history"))
}

/// Why the console could not run.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// No member was given.
    #[error("no cluster member given")]
    NoMembers,
    /// The first member's index is out of range.
    #[error("member index {first} is out of range ({len} members)")]
    FirstOutOfRange {
        /// The index given.
        first: usize,
        /// The number of members.
        len: usize,
    },
    /// The line editor failed.
    #[error("line editor: {0}")]
    Readline(#[from] rustyline::error::ReadlineError),
    /// Reading input or writing output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a console run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Commands sent (or attempted).
    pub commands: u64,
    /// Commands that could not be parsed, reached no member, or whose outcome is unknown.
    /// Error replies from the server are answers, not failures.
    pub failed: u64,
}

impl Summary {
    /// The process exit code for this run: 0 if every command got an answer, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0)
    }
}

/// Runs the console on standard input and output: interactive with line editing when standard
/// input is a terminal, line by line without prompt otherwise.
pub fn run(members: Vec<Member>, first: usize, options: &Options) -> Result<Summary, ConsoleError> {
    let mut session = Session::new(members, first, options)?;
    if io::stdin().is_terminal() {
        interactive(&mut session, options)
    } else {
        run_script(&mut session, io::stdin().lock(), &mut io::stdout().lock(), &mut io::stderr())
    }
}

/// The non-interactive console: reads `input` line by line until its end, writes each answer
/// to `out` (flushed after each), failover notices to `notices`. Blank lines are skipped;
/// `exit`/`quit` stops early.
pub fn run_script(
    session: &mut Session,
    mut input: impl BufRead,
    out: &mut dyn Write,
    notices: &mut dyn Write,
) -> Result<Summary, ConsoleError> {
    let mut summary = Summary::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(summary);
        }
        if handle_line(session, &line, out, notices, &mut summary)? == Flow::Exit {
            return Ok(summary);
        }
        out.flush()?;
    }
}

fn interactive(session: &mut Session, options: &Options) -> Result<Summary, ConsoleError> {
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut editor = rustyline::DefaultEditor::new()?;
    if let Some(path) = &options.history_file {
        // A missing or unreadable history file is not an error.
        let _ = editor.load_history(path);
    }
    writeln!(stdout, "raft-kv console. Type `help` for the commands, `exit` to leave.")?;
    if session.connect(&mut stderr) {
        let m = session.current();
        writeln!(stdout, "connected to node {} ({})", m.id, m.addr)?;
    } else {
        writeln!(stderr, "no member is reachable yet; commands will keep trying")?;
    }
    let mut summary = Summary::default();
    loop {
        let m = session.current();
        let prompt = if session.is_connected() {
            format!("{} {}> ", m.id, m.addr)
        } else {
            format!("{} {} (not connected)> ", m.id, m.addr)
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let flow = handle_line(session, line.as_bytes(), &mut stdout, &mut stderr, &mut summary)?;
                stdout.flush()?;
                if flow == Flow::Exit {
                    break;
                }
            }
            // Ctrl-C abandons the line being typed.
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            // Ctrl-D leaves.
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(path) = &options.history_file {
        let _ = editor.save_history(path);
    }
    Ok(summary)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Handles one input line: local commands, or a Redis command sent through the session.
fn handle_line(
    session: &mut Session,
    line: &[u8],
    out: &mut dyn Write,
    notices: &mut dyn Write,
    summary: &mut Summary,
) -> io::Result<Flow> {
    let args = match split_args(line) {
        Ok(args) => args,
        Err(e) => {
            summary.commands += 1;
            summary.failed += 1;
            writeln!(out, "(error) Invalid argument(s): {e}")?;
            return Ok(Flow::Continue);
        }
    };
    let Some(name) = args.first() else {
        return Ok(Flow::Continue);
    };
    if name.eq_ignore_ascii_case(b"exit") || name.eq_ignore_ascii_case(b"quit") {
        return Ok(Flow::Exit);
    }
    if name.eq_ignore_ascii_case(b"help") {
        out.write_all(help_text(args.get(1).map(Vec::as_slice)).as_bytes())?;
        return Ok(Flow::Continue);
    }
    let args = console_alias(args);
    summary.commands += 1;
    match session.execute(&args, retry_safe(&args), notices) {
        Outcome::Reply(frame) => out.write_all(format_reply(&frame).as_bytes())?,
        Outcome::Unreachable { last_error } => {
            summary.failed += 1;
            writeln!(out, "(error) cluster unreachable: {last_error}")?;
        }
        Outcome::Unknown { error } => {
            summary.failed += 1;
            writeln!(
                out,
                "(error) outcome unknown: the command was sent but its reply was lost ({error}); \
                 it may or may not have been applied"
            )?;
        }
    }
    Ok(Flow::Continue)
}

/// The console's own membership commands, as in xraft, turned into the RESP commands they stand
/// for: `raft-add-node D host clientPort corePort` (or `D,host,clientPort,corePort`) is
/// `RAFT.MEMBER ADD ...`, `raft-remove-node A` is `RAFT.MEMBER REMOVE A`, `raft-members` is
/// `RAFT.MEMBER LIST`, `raft-transfer-leader B` is `RAFT.TRANSFER B`. Anything else is unchanged.
pub fn console_alias(args: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let Some(name) = args.first() else { return args };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = &args[1..];
    let with = |prefix: &[&str], rest: &[Vec<u8>]| {
        prefix.iter().map(|p| p.as_bytes().to_vec()).chain(rest.iter().cloned()).collect()
    };
    match name.as_str() {
        "raft-add-node" if rest.len() == 1 => {
            let parts: Vec<Vec<u8>> = rest[0].split(|&b| b == b',').map(<[u8]>::to_vec).collect();
            with(&["RAFT.MEMBER", "ADD"], &parts)
        }
        "raft-add-node" => with(&["RAFT.MEMBER", "ADD"], rest),
        "raft-remove-node" => with(&["RAFT.MEMBER", "REMOVE"], rest),
        "raft-members" => with(&["RAFT.MEMBER", "LIST"], rest),
        "raft-transfer-leader" => with(&["RAFT.TRANSFER"], rest),
        _ => args,
    }
}

/// Whether a command may be resent after its reply was lost: reads and connection commands
/// that this server knows. Unknown and malformed commands count as writes.
pub fn retry_safe(args: &[Vec<u8>]) -> bool {
    let args = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    Request::from_args(args).is_ok_and(|r| r.access().is_retry_safe())
}

/// The text of `help` (all commands) or `help <command>`.
pub fn help_text(topic: Option<&[u8]>) -> String {
    if let Some(topic) = topic {
        return match lookup(topic) {
            Some(spec) => format!("{} {}\n  {}\n", spec.name.to_ascii_uppercase(), spec.usage, spec.summary),
            None => {
                format!("no help for '{}': not a command of this server\n", String::from_utf8_lossy(topic))
            }
        };
    }
    let mut text = String::from(
        "Type a Redis command and its arguments, e.g.\n  set a hello-world\n  get a\n\
         Arguments may be quoted: \"with spaces\\n and escapes\\x41\", 'single quoted'.\n\
         help <command>   shows one command\n\
         exit, quit       leave the console\n\
         raft-add-node D,host,clientPort,corePort   add a standby as a learner (RAFT.MEMBER ADD)\n\
         raft-remove-node A                          remove a member (RAFT.MEMBER REMOVE)\n\
         raft-members                                list the members (RAFT.MEMBER LIST)\n\
         raft-transfer-leader B                      hand leadership to B (RAFT.TRANSFER)\n\
         (membership commands go to the leader: a NOTLEADER answer names it)\n\nCommands:\n",
    );
    for spec in COMMANDS {
        let head = format!("{} {}", spec.name.to_ascii_uppercase(), spec.usage);
        text.push_str(&format!("  {:<40} {}\n", head.trim_end(), spec.summary));
    }
    text.push_str(
        "\nA write whose reply is lost when a node fails is not resent (it may have been\n\
         applied): the console says its outcome is unknown. Reads are resent elsewhere.\n",
    );
    text
}

#[cfg(test)]
mod tests;
