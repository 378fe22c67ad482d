//! A client session over the members of a cluster, with failover.
//!
//! The session talks to one member at a time. When that member cannot be reached, a request
//! fails with an I/O error (timeouts included), or the reply is an error starting with
//! `TRYAGAIN` or `CLUSTERDOWN` (the server's way to say "not now, not here"), the session moves
//! on to the next member (round robin) and prints a one-line notice.
//!
//! Whether the request is then sent again depends on whether that is safe:
//! - A request that **did not leave** (connecting failed, or writing it failed: a server only
//!   executes a complete request), or that was answered `TRYAGAIN` (raft-kv's promise that it
//!   did not execute it), is retried whatever it is. Before sending on a connection
//!   that sat idle, the session checks that the member has not closed it meanwhile (a restarted
//!   node), and reconnects if so, so that such a request is not lost in a dead socket.
//! - A request the caller declared **retry-safe** (reads and connection commands) is retried
//!   after any failure.
//! - Otherwise (a write that was sent) the session does **not** resend it: the write may or may
//!   not have been applied, and applying it twice could be wrong (`INCR`, `APPEND`). The caller
//!   gets [`Outcome::Unknown`] and must say so. After `CLUSTERDOWN` the caller gets the
//!   server's error reply itself.
//!
//! Retrying is bounded: after every full round over the members the session sleeps (doubling
//! from `backoff_min` to `backoff_max`), and it gives up when `failover_budget` has elapsed since
//! the request started, with [`Outcome::Unreachable`]. Each attempt is itself bounded by
//! `connect_timeout` (clipped to the budget left) and `request_timeout`.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::resp::client::{ClientError, Connection};
use crate::resp::Frame;

use super::{ConsoleError, Member, Options};

/// The result of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server's reply (possibly an error reply).
    Reply(Frame),
    /// No member could be reached (or none accepted the request) within the failover budget; the
    /// request was not executed, or it was safe to retry and never answered.
    Unreachable {
        /// The last failure seen, for the user.
        last_error: String,
    },
    /// A non-retry-safe request was sent and then the connection failed: it may or may not have
    /// been applied.
    Unknown {
        /// The failure, for the user.
        error: String,
    },
}

/// A failover client session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    /// The cluster's members, in the configured order.
    members: Vec<Member>,
    /// Index of the member currently used.
    current: usize,
    /// The open connection to `members[current]`, if any.
    conn: Option<Connection>,
    /// Timeouts and budgets.
    options: Options,
}

/// Why one attempt failed, and whether the request reached the server.
struct Failure {
    /// For the user.
    message: String,
    /// True when the request may have reached the server.
    sent: bool,
    /// The error reply that caused the failover (`TRYAGAIN`/`CLUSTERDOWN`), if that is the cause.
    reply: Option<Frame>,
}

impl Session {
    /// A session over `members`, starting with `members[first]`. Does not connect yet.
    pub fn new(members: Vec<Member>, first: usize, options: &Options) -> Result<Session, ConsoleError> {
        if members.is_empty() {
            return Err(ConsoleError::NoMembers);
        }
        if first >= members.len() {
            return Err(ConsoleError::FirstOutOfRange { first, len: members.len() });
        }
        Ok(Session { members, current: first, conn: None, options: options.clone() })
    }

    /// The member currently used.
    pub fn current(&self) -> &Member {
        &self.members[self.current]
    }

    /// Whether a connection to the current member is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Tries each member once, starting with the current one, until one accepts a connection.
    /// Prints a notice for each member that fails. Returns whether a connection is open.
    pub fn connect(&mut self, notices: &mut dyn Write) -> bool {
        for _ in 0..self.members.len() {
            if self.conn.is_some() {
                return true;
            }
            match self.open(self.options.connect_timeout) {
                Ok(()) => return true,
                Err(message) => self.fail_over(&message, notices),
            }
        }
        self.conn.is_some()
    }

    /// Sends `args` and returns the outcome, failing over as the module documentation says.
    pub fn execute<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        retry_safe: bool,
        notices: &mut dyn Write,
    ) -> Outcome {
        let start = Instant::now();
        let deadline = start + self.options.failover_budget;
        let mut backoff = self.options.backoff_min;
        let mut failures_in_round = 0;
        loop {
            let failure = match self.attempt(args, deadline) {
                Ok(frame) => return Outcome::Reply(frame),
                Err(failure) => failure,
            };
            self.conn = None;
            self.fail_over(&failure.message, notices);
            if failure.sent && !retry_safe {
                return match failure.reply {
                    Some(reply) => Outcome::Reply(reply),
                    None => Outcome::Unknown { error: failure.message },
                };
            }
            failures_in_round += 1;
            if failures_in_round >= self.members.len() {
                failures_in_round = 0;
                let left = deadline.saturating_duration_since(Instant::now());
                thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(self.options.backoff_max);
            }
            if Instant::now() >= deadline {
                return Outcome::Unreachable {
                    last_error: format!(
                        "no member answered within {:.1} s (last error: {})",
                        self.options.failover_budget.as_secs_f64(),
                        failure.message
                    ),
                };
            }
        }
    }

    /// Opens a connection to the current member.
    fn open(&mut self, timeout: Duration) -> Result<(), String> {
        let member = &self.members[self.current];
        let conn = Connection::connect(&member.addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
        conn.set_timeout(Some(self.options.request_timeout))
            .map_err(|e| format!("cannot set timeouts: {e}"))?;
        self.conn = Some(conn);
        Ok(())
    }

    /// One attempt on the current member.
    fn attempt<A: AsRef<[u8]>>(&mut self, args: &[A], deadline: Instant) -> Result<Frame, Failure> {
        let not_sent = |message: String| Failure { message, sent: false, reply: None };
        if self.conn.as_ref().is_some_and(Connection::is_closed_by_peer) {
            // The member closed the idle connection (it restarted, or dropped idle clients):
            // nothing was sent yet, so reconnecting to it is safe for any request.
            self.conn = None;
        }
        if self.conn.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.options.connect_timeout.min(left);
            if timeout.is_zero() {
                return Err(not_sent("failover budget exhausted".to_string()));
            }
            self.open(timeout).map_err(not_sent)?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(not_sent("not connected".to_string()));
        };
        conn.send(args).map_err(|e| not_sent(format!("cannot send: {e}")))?;
        let frame = conn.receive().map_err(|e| Failure {
            message: match e {
                ClientError::Io(ref io) if is_timeout(io) => "no reply in time".to_string(),
                other => format!("no reply: {other}"),
            },
            sent: true,
            reply: None,
        })?;
        if let Frame::Error(text) = &frame {
            // raft-kv answers TRYAGAIN only for a request it did not execute (no leader took it),
            // so even a write may be sent again; CLUSTERDOWN promises nothing of the kind.
            let not_executed = text.starts_with(b"TRYAGAIN");
            if not_executed || text.starts_with(b"CLUSTERDOWN") {
                return Err(Failure {
                    message: String::from_utf8_lossy(text).into_owned(),
                    sent: !not_executed,
                    reply: Some(frame),
                });
            }
        }
        Ok(frame)
    }

    /// Drops the connection, moves to the next member and prints a notice.
    fn fail_over(&mut self, reason: &str, notices: &mut dyn Write) {
        self.conn = None;
        let from = self.current;
        self.current = (self.current + 1) % self.members.len();
        let (a, b) = (&self.members[from], &self.members[self.current]);
        // A notice that cannot be printed is not worth failing the request for.
        let _ = writeln!(
            notices,
            "node {} ({}): {reason}; switching to node {} ({})",
            a.id, a.addr, b.id, b.addr
        );
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}
