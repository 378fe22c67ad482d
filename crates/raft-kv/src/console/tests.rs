//! Console tests: formatting, local commands, and the piped console against a real
//! `redis-server` (which must be on PATH) and against fake members that fail in chosen ways.

use super::*;
use crate::resp::{encode, Frame, Limits, Parser};
use bytes::BytesMut;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Formatting

fn b(s: &str) -> Frame {
    Frame::bulk_from_slice(s.as_bytes())
}

#[test]
fn formats_scalars_like_redis_cli() {
    assert_eq!(format_reply(&Frame::ok()), "OK\n");
    assert_eq!(format_reply(&Frame::error("ERR nope")), "(error) ERR nope\n");
    assert_eq!(format_reply(&Frame::Integer(-5)), "(integer) -5\n");
    assert_eq!(format_reply(&b("hello-world")), "\"hello-world\"\n");
    assert_eq!(format_reply(&Frame::Null), "(nil)\n");
    assert_eq!(format_reply(&Frame::NullArray), "(nil)\n");
    assert_eq!(format_reply(&Frame::Array(vec![])), "(empty array)\n");
    assert_eq!(format_reply(&b("")), "\"\"\n");
}

#[test]
fn formats_maps_as_resp2_arrays() {
    let map = Frame::Map(vec![(b("save"), b("")), (b("appendonly"), b("yes"))]);
    assert_eq!(format_reply(&map), "1) \"save\"\n2) \"\"\n3) \"appendonly\"\n4) \"yes\"\n");
    assert_eq!(format_reply(&Frame::Map(vec![])), "(empty array)\n");
}

#[test]
fn escapes_bulk_strings_like_redis_cli() {
    let data = Frame::bulk_from_slice(b"a\"b\\c\n\r\t\x07\x08\x00\xff\xe4\xb8\xad~ ");
    assert_eq!(format_reply(&data), "\"a\\\"b\\\\c\\n\\r\\t\\a\\b\\x00\\xff\\xe4\\xb8\\xad~ \"\n");
}

#[test]
fn formats_arrays_like_redis_cli() {
    // Alignment as printed by redis-cli 7.0 for an 11-element LRANGE.
    let letters: Vec<Frame> = "abcdefghijk".chars().map(|c| b(&c.to_string())).collect();
    let expected: String =
        "abcdefghijk".chars().enumerate().map(|(i, c)| format!("{:>2}) \"{c}\"\n", i + 1)).collect();
    assert_eq!(format_reply(&Frame::Array(letters)), expected);
    // Nesting as printed by redis-cli 7.0 for COMMAND INFO get (abridged).
    let nested = Frame::Array(vec![Frame::Array(vec![
        b("get"),
        Frame::Integer(2),
        Frame::Array(vec![Frame::simple("readonly"), Frame::simple("fast")]),
        Frame::Integer(1),
        Frame::Integer(1),
        Frame::Integer(1),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![Frame::Array(vec![b("flags"), Frame::Array(vec![Frame::simple("RO")])])]),
        Frame::Array(vec![]),
    ])]);
    let expected = "\
1)  1) \"get\"
    2) (integer) 2
    3) 1) readonly
       2) fast
    4) (integer) 1
    5) (integer) 1
    6) (integer) 1
    7) (empty array)
    8) (empty array)
    9) 1) 1) \"flags\"
          2) 1) RO
   10) (empty array)
";
    assert_eq!(format_reply(&nested), expected);
}

// ---------------------------------------------------------------------------------------------
// Local behaviour

fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        failover_budget: Duration::from_secs(5),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        history_file: None,
    }
}

fn member(id: &str, addr: &str) -> Member {
    Member { id: id.to_string(), addr: addr.to_string() }
}

/// Runs the piped console over `members` (starting with the first) on `input`.
fn pipe(members: Vec<Member>, options: &Options, input: &str) -> (String, String, Summary) {
    let mut session = Session::new(members, 0, options).expect("session");
    let mut out = Vec::new();
    let mut notices = Vec::new();
    let summary = run_script(&mut session, input.as_bytes(), &mut out, &mut notices).expect("run_script");
    (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&notices).into_owned(), summary)
}

/// An address on which nothing listens (bound, then released).
fn closed_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    addr
}

#[test]
fn local_commands_need_no_server() {
    let members = vec![member("A", &closed_addr())];
    let (out, notices, summary) =
        pipe(members, &options(), "\n   \nhelp get\nset 'unbalanced\nset k \"a\"b\nexit\nget never-sent\n");
    assert_eq!(
        out,
        "GET key\n  Returns the value of key, or nil.\n\
         (error) Invalid argument(s): unbalanced quotes\n\
         (error) Invalid argument(s): closing quote must be followed by a space\n"
    );
    assert_eq!(notices, "");
    assert_eq!(summary, Summary { commands: 2, failed: 2 });
    assert_eq!(summary.exit_code(), 1);
}

#[test]
fn help_lists_every_command() {
    let text = help_text(None);
    for spec in COMMANDS {
        assert!(text.contains(&spec.name.to_ascii_uppercase()), "{}", spec.name);
    }
    assert!(help_text(Some(b"nope")).contains("not a command"));
}

#[test]
fn retry_safety_classification() {
    let words = |line: &str| split_args(line.as_bytes()).expect("split");
    assert!(retry_safe(&words("get a")));
    assert!(retry_safe(&words("MGET a b")));
    assert!(retry_safe(&words("info raft")));
    assert!(retry_safe(&words("ping")));
    assert!(!retry_safe(&words("set a b")));
    assert!(!retry_safe(&words("incr a")));
    assert!(!retry_safe(&words("raft.snapshot")));
    assert!(!retry_safe(&words("lpush unknown-here x")));
    assert!(!retry_safe(&words("get")), "malformed counts as a write");
}

#[test]
fn session_rejects_bad_configuration() {
    assert!(matches!(Session::new(vec![], 0, &options()), Err(ConsoleError::NoMembers)));
    assert!(matches!(
        Session::new(vec![member("A", "x:1")], 1, &options()),
        Err(ConsoleError::FirstOutOfRange { first: 1, len: 1 })
    ));
}

#[test]
fn gives_up_after_the_failover_budget() {
    let budget = Duration::from_millis(300);
    let opts = Options { failover_budget: budget, ..options() };
    let members = vec![member("A", &closed_addr()), member("B", &closed_addr())];
    let started = Instant::now();
    let (out, notices, summary) = pipe(members, &opts, "get a\n");
    let elapsed = started.elapsed();
    assert!(out.starts_with("(error) cluster unreachable: no member answered within 0.3 s"), "{out}");
    assert!(notices.contains("switching to node B"), "{notices}");
    assert!(notices.contains("switching to node A"), "{notices}");
    assert_eq!(summary, Summary { commands: 1, failed: 1 });
    assert!(elapsed >= budget, "gave up early: {elapsed:?}");
    assert!(elapsed < budget + Duration::from_secs(3), "did not give up: {elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// Fake members

/// What a fake member does with each connection after reading one complete request.
#[derive(Clone)]
enum Fake {
    /// Closes the connection without a word (the request's fate is unknown to the client).
    Vanish,
    /// Replies, then waits for the client to send more or leave before closing.
    Reply(Frame),
    /// Replies and closes the connection at once.
    ReplyAndClose(Frame),
}

/// A member that accepts `connections` connections one after the other and treats each as
/// `behaviour` says. Returns its address, a handle giving the number of requests it read, and a
/// channel that receives a message each time it has closed a connection.
fn fake_member(
    connections: usize,
    behaviour: Fake,
) -> (String, JoinHandle<usize>, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut requests = 0;
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            if read_request(&mut stream).is_some() {
                requests += 1;
                let mut out = BytesMut::new();
                match &behaviour {
                    Fake::Vanish => {}
                    Fake::Reply(reply) => {
                        encode(reply, &mut out);
                        let _ = std::io::Write::write_all(&mut stream, &out);
                        let _ = read_request(&mut stream);
                    }
                    Fake::ReplyAndClose(reply) => {
                        encode(reply, &mut out);
                        let _ = std::io::Write::write_all(&mut stream, &out);
                    }
                }
            }
            drop(stream);
            let _ = closed_tx.send(());
        }
        requests
    });
    (addr, handle, closed_rx)
}

fn read_request(stream: &mut TcpStream) -> Option<Frame> {
    let mut parser = Parser::requests(Limits::server());
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(frame)) = parser.parse(&mut buf) {
            return Some(frame);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against a real redis-server

/// A `redis-server` child process on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    addr: String,
}

impl RedisServer {
    fn start() -> RedisServer {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "redis-server is not on PATH: the console tests need it \
                     (apt-get install -y redis-server)"
                )
            });
        // The port is free when chosen; if another process takes it first, redis-server exits
        // and we pick another.
        for _ in 0..5 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let mut child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ping = crate::resp::client::Connection::connect(&addr, Duration::from_secs(1))
                    .and_then(|mut c| c.request(&["PING"]));
                if let Ok(Frame::Simple(pong)) = ping {
                    if &pong[..] == b"PONG" {
                        return RedisServer { child, addr };
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn piped_console_against_redis() {
    let redis = RedisServer::start();
    let input = "\
set a hello-world
get a
GET missing
incr n
incrby n 4
mget a missing
set k \"hello world\\x21\\n\"
get k
del a k

exists a k
foo bar
set k v nx xx
exit
get never-sent
";
    let (out, notices, summary) = pipe(vec![member("A", &redis.addr)], &options(), input);
    let expected = "\
OK
\"hello-world\"
(nil)
(integer) 1
(integer) 5
1) \"hello-world\"
2) (nil)
OK
\"hello world!\\n\"
(integer) 2
(integer) 0
(error) ERR unknown command 'foo', with args beginning with: 'bar' 
(error) ERR syntax error
";
    assert_eq!(out, expected);
    assert_eq!(notices, "");
    assert_eq!(summary, Summary { commands: 12, failed: 0 });
    assert_eq!(summary.exit_code(), 0);
}

#[test]
fn fails_over_from_a_closed_port_to_the_next_member() {
    let redis = RedisServer::start();
    let closed = closed_addr();
    let members = vec![member("A", &closed), member("B", &redis.addr)];
    // A write is retried too: it never left.
    let (out, notices, summary) = pipe(members, &options(), "set x 1\nget x\n");
    assert_eq!(out, "OK\n\"1\"\n");
    assert_eq!(notices.lines().count(), 1, "one switch, one notice: {notices}");
    assert!(notices.starts_with(&format!("node A ({closed}): cannot connect: ")), "{notices}");
    assert!(notices.trim_end().ends_with(&format!("switching to node B ({})", redis.addr)), "{notices}");
    assert_eq!(summary, Summary { commands: 2, failed: 0 });
}

#[test]
fn a_write_whose_reply_is_lost_is_not_resent() {
    let redis = RedisServer::start();
    let (fake, handle, _) = fake_member(1, Fake::Vanish);
    let members = vec![member("A", &fake), member("B", &redis.addr)];
    let (out, notices, summary) = pipe(members, &options(), "incr counter\nget counter\n");
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("(error) outcome unknown: "), "{out}");
    assert!(first.ends_with("it may or may not have been applied"), "{out}");
    // Had the INCR been resent to B, the counter would be 1.
    assert_eq!(lines.next(), Some("(nil)"), "{out}");
    assert!(notices.contains("switching to node B"), "{notices}");
    assert_eq!(summary, Summary { commands: 2, failed: 1 });
    assert_eq!(handle.join().ok(), Some(1), "A received the INCR once");
}

#[test]
fn a_read_whose_reply_is_lost_is_resent() {
    let redis = RedisServer::start();
    let (fake, handle, _) = fake_member(1, Fake::Vanish);
    let mut setup =
        crate::resp::client::Connection::connect(&redis.addr, Duration::from_secs(2)).expect("connect");
    assert_eq!(setup.request(&["SET", "r", "v"]).ok(), Some(Frame::ok()));
    let members = vec![member("A", &fake), member("B", &redis.addr)];
    let (out, _, summary) = pipe(members, &options(), "get r\n");
    assert_eq!(out, "\"v\"\n");
    assert_eq!(summary, Summary { commands: 1, failed: 0 });
    assert_eq!(handle.join().ok(), Some(1));
}

#[test]
fn tryagain_moves_on_and_retries_clusterdown_only_for_reads() {
    let redis = RedisServer::start();
    let tryagain = Frame::error("TRYAGAIN no leader yet");
    // A read: answered by B after A's TRYAGAIN.
    let (fake, handle, _) = fake_member(1, Fake::Reply(tryagain));
    let members = vec![member("A", &fake), member("B", &redis.addr)];
    let (out, notices, summary) = pipe(members, &options(), "get t\n");
    assert_eq!(out, "(nil)\n");
    assert!(notices.contains("TRYAGAIN no leader yet; switching to node B"), "{notices}");
    assert_eq!(summary, Summary { commands: 1, failed: 0 });
    assert_eq!(handle.join().ok(), Some(1));
    // A write after TRYAGAIN (raft-kv: "not executed") is sent again to B.
    let (fake, handle, _) = fake_member(1, Fake::Reply(Frame::error("TRYAGAIN no leader")));
    let members = vec![member("A", &fake), member("B", &redis.addr)];
    let (out, _, summary) = pipe(members, &options(), "set t 1\nget t\n");
    assert_eq!(out, "OK\n\"1\"\n");
    assert_eq!(summary, Summary { commands: 2, failed: 0 });
    assert_eq!(handle.join().ok(), Some(1));
    // A write after CLUSTERDOWN: the server's answer is shown, not resent; the next command goes to B.
    let (fake, handle, _) = fake_member(1, Fake::Reply(Frame::error("CLUSTERDOWN no quorum")));
    let members = vec![member("A", &fake), member("B", &redis.addr)];
    let (out, _, summary) = pipe(members, &options(), "set u 1\nget u\n");
    assert_eq!(out, "(error) CLUSTERDOWN no quorum\n(nil)\n");
    assert_eq!(summary, Summary { commands: 2, failed: 0 });
    assert_eq!(handle.join().ok(), Some(1));
}

#[test]
fn a_connection_closed_while_idle_is_reopened_before_a_write() {
    // The member answers, then closes the connection (as a restarting node would). The next
    // write must not be written into the dead socket and reported as "outcome unknown": the
    // session notices the close and reconnects to the same member.
    let (fake, handle, closed) = fake_member(2, Fake::ReplyAndClose(Frame::ok()));
    let mut session = Session::new(vec![member("A", &fake)], 0, &options()).expect("session");
    let mut out = Vec::new();
    let mut notices = Vec::new();
    let first = run_script(&mut session, &b"set a 1\n"[..], &mut out, &mut notices);
    assert_eq!(first.ok(), Some(Summary { commands: 1, failed: 0 }));
    closed.recv().expect("the member closed the first connection");
    let second = run_script(&mut session, &b"set b 2\n"[..], &mut out, &mut notices);
    assert_eq!(second.ok(), Some(Summary { commands: 1, failed: 0 }));
    assert_eq!(String::from_utf8_lossy(&out), "OK\nOK\n");
    assert_eq!(String::from_utf8_lossy(&notices), "", "no failover was needed");
    assert_eq!(handle.join().ok(), Some(2));
}

#[test]
fn xraft_membership_commands_become_raft_member_commands() {
    let w = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(console_alias(w("raft-add-node D,h,1,2")), w("RAFT.MEMBER ADD D h 1 2"));
    assert_eq!(console_alias(w("raft-add-node D h 1 2")), w("RAFT.MEMBER ADD D h 1 2"));
    assert_eq!(console_alias(w("RAFT-REMOVE-NODE A")), w("RAFT.MEMBER REMOVE A"));
    assert_eq!(console_alias(w("raft-members")), w("RAFT.MEMBER LIST"));
    assert_eq!(console_alias(w("raft-transfer-leader B")), w("RAFT.TRANSFER B"));
    assert_eq!(console_alias(w("get a")), w("get a"));
    assert!(help_text(None).contains("raft-add-node"));
}
