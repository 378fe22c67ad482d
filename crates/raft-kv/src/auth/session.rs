//! Authentication on a client connection: `AUTH`, `HELLO ... AUTH`, `ACL WHOAMI` / `ACL LIST`,
//! `-NOAUTH` for everything else until the connection is authenticated, and the permission check
//! of each request against its user's categories and key patterns.
//!
//! The server calls [`Gate::screen`] on every request frame before parsing it, and
//! [`ConnAuth::permit`] on every parsed request before running it. Both are cheap when
//! authentication is off (the connection starts as the unrestricted `default` user and the check
//! is two comparisons).
//!
//! Invariant: a request runs only if the connection's user is set and holds the request's
//! category and every key it names; a script request leaves [`ConnAuth::permit`] carrying the
//! user's rules (none for an unrestricted user), which the state machine applies to every
//! command the script calls. Argon2 checks run on the blocking pool, one at a time
//! (a semaphore), so a burst of `AUTH` attempts costs at most one core and never stalls the
//! network threads; failed attempts are logged and limited per address ([`super::limit`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::limit::{Limiter, Verdict};
use super::{AuthFailure, Category, User, Users, DEFAULT_USER};
use crate::command::{script, Access, Request};
use crate::resp::Frame;

/// What every connection shares: the users, the failure limiter, the Argon2 permit.
pub struct Gate {
    users: Arc<Users>,
    limiter: Mutex<Limiter>,
    argon: Semaphore,
    auth_timeout: Duration,
}

/// How long a connection that must authenticate may take to do it, by default.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// The last answer of a connection closed for not authenticating in time.
pub const AUTH_TIMEOUT_ERROR: &str = "ERR authentication timeout: the connection is closed";

/// The authentication state of one connection.
#[derive(Debug)]
pub struct ConnAuth {
    /// The user it is authenticated as (None: not yet).
    pub user: Option<Arc<User>>,
    /// Its peer address (for the limiter and the log).
    peer: Option<IpAddr>,
    /// Its peer address as text (for the log).
    peer_text: String,
}

/// What to do with a request frame.
#[derive(Debug)]
pub enum Screen {
    /// Parse and run it (after [`ConnAuth::permit`]); `name` is its command name as sent.
    Pass {
        /// The frame (for `HELLO ... AUTH`, without the `AUTH user pass` words).
        frame: Frame,
        /// The command name as sent.
        name: Bytes,
    },
    /// Answer this and run nothing.
    Answer(Frame),
}

/// Redis' answer to a failed authentication.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis' answer to a command before authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";

impl Gate {
    /// A gate over `users`.
    pub fn new(users: Users) -> Gate {
        Gate {
            users: Arc::new(users),
            limiter: Mutex::new(Limiter::default()),
            argon: Semaphore::new(1),
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }

    /// Sets how long a connection may take to authenticate (when it must).
    pub fn with_auth_timeout(mut self, timeout: Duration) -> Gate {
        self.auth_timeout = timeout;
        self
    }

    /// How long a connection may take to authenticate.
    pub fn auth_timeout(&self) -> Duration {
        self.auth_timeout
    }

    /// The users.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The state of a new connection from `peer`.
    pub fn connection(&self, peer: &str) -> ConnAuth {
        let ip = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        ConnAuth { user: self.users.initial_user(), peer: ip, peer_text: peer.to_string() }
    }

    /// Handles `AUTH`, `HELLO ... AUTH`, `ACL` and the `-NOAUTH` rule for one request frame.
    pub async fn screen(&self, conn: &mut ConnAuth, frame: Frame) -> Screen {
        let Some(name) = command_name(&frame) else {
            // Not a request of words: the parser answers it (after the NOAUTH rule).
            return if conn.user.is_some() {
                Screen::Pass { frame, name: Bytes::new() }
            } else {
                Screen::Answer(Frame::error(NOAUTH))
            };
        };
        if name.eq_ignore_ascii_case(b"auth") {
            return Screen::Answer(self.auth_command(conn, &frame).await);
        }
        if name.eq_ignore_ascii_case(b"hello") {
            return self.hello(conn, frame, name).await;
        }
        if name.eq_ignore_ascii_case(b"quit") {
            return Screen::Pass { frame, name };
        }
        let Some(user) = &conn.user else {
            return Screen::Answer(Frame::error(NOAUTH));
        };
        if name.eq_ignore_ascii_case(b"acl") {
            return Screen::Answer(self.acl(user, &frame));
        }
        Screen::Pass { frame, name }
    }

    async fn auth_command(&self, conn: &mut ConnAuth, frame: &Frame) -> Frame {
        let args = words(frame);
        let (user, password) = match args.len() {
            2 => {
                if !self.users.default_has_password() {
                    return Frame::error(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                    );
                }
                (Bytes::from_static(DEFAULT_USER.as_bytes()), args[1].clone())
            }
            3 => (args[1].clone(), args[2].clone()),
            _ => return Frame::error("ERR wrong number of arguments for 'auth' command"),
        };
        match self.authenticate(conn, user, password).await {
            Ok(()) => Frame::ok(),
            Err(refusal) => refusal,
        }
    }

    async fn hello(&self, conn: &mut ConnAuth, frame: Frame, name: Bytes) -> Screen {
        let args = words(&frame);
        // HELLO protover [AUTH user pass] [SETNAME name]: options start after the version.
        let auth_at = (2..args.len()).find(|&i| args[i].eq_ignore_ascii_case(b"auth"));
        let Some(at) = auth_at else {
            if conn.user.is_none() {
                return Screen::Answer(Frame::error(
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                ));
            }
            return Screen::Pass { frame, name };
        };
        if at + 2 >= args.len() {
            return Screen::Answer(Frame::error("ERR Syntax error in HELLO option 'auth'"));
        }
        if let Err(refusal) = self.authenticate(conn, args[at + 1].clone(), args[at + 2].clone()).await {
            return Screen::Answer(refusal);
        }
        let rest: Vec<Frame> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| !(at..at + 3).contains(i))
            .map(|(_, w)| Frame::Bulk(w.clone()))
            .collect();
        Screen::Pass { frame: Frame::Array(rest), name }
    }

    /// Checks a password (rate-limited, logged); sets the connection's user on success.
    async fn authenticate(&self, conn: &mut ConnAuth, user: Bytes, password: Bytes) -> Result<(), Frame> {
        let user_name = String::from_utf8_lossy(&user).into_owned();
        if let Some(ip) = conn.peer {
            let verdict =
                self.limiter.lock().map(|mut l| l.check(ip, Instant::now())).unwrap_or(Verdict::Check);
            if let Verdict::Blocked(left) = verdict {
                tracing::warn!(peer = %conn.peer_text, user = %printable(&user_name), "authentication refused: too many failures from this address");
                return Err(Frame::error(format!(
                    "WRONGPASS too many failed authentication attempts from your address; retry in {} s",
                    left.as_secs().max(1)
                )));
            }
        }
        let result = {
            // One Argon2 check at a time, off the network threads.
            let _permit = self.argon.acquire().await;
            let users = self.users.clone();
            let name = user_name.clone();
            tokio::task::spawn_blocking(move || users.authenticate(&name, &password))
                .await
                .unwrap_or(Err(AuthFailure::WrongPassword))
        };
        match result {
            Ok(u) => {
                if let Some(ip) = conn.peer {
                    if let Ok(mut l) = self.limiter.lock() {
                        l.succeeded(ip);
                    }
                }
                tracing::debug!(peer = %conn.peer_text, user = %u.name, "authenticated");
                conn.user = Some(u);
                Ok(())
            }
            Err(why) => {
                let (failures, block) = match conn.peer {
                    Some(ip) => {
                        self.limiter.lock().map(|mut l| l.failed(ip, Instant::now())).unwrap_or((0, None))
                    }
                    None => (0, None),
                };
                tracing::warn!(
                    peer = %conn.peer_text,
                    user = %printable(&user_name),
                    reason = %why,
                    failures,
                    blocked_s = block.map_or(0, |b| b.as_secs()),
                    "authentication failed"
                );
                Err(Frame::error(WRONGPASS))
            }
        }
    }

    fn acl(&self, user: &User, frame: &Frame) -> Frame {
        let args = words(frame);
        let sub = args.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).unwrap_or_default();
        match (sub.as_str(), args.len()) {
            ("whoami", 2) => Frame::Bulk(Bytes::from(user.name.clone())),
            ("list", 2) => {
                if !user.categories.contains(Category::Admin) {
                    return no_permission(user, b"acl|list");
                }
                Frame::Array(self.users.users().map(|u| Frame::Bulk(Bytes::from(u.describe()))).collect())
            }
            ("users", 2) => {
                if !user.categories.contains(Category::Admin) {
                    return no_permission(user, b"acl|users");
                }
                Frame::Array(self.users.users().map(|u| Frame::Bulk(Bytes::from(u.name.clone()))).collect())
            }
            ("whoami" | "list" | "users", _) => {
                Frame::error(format!("ERR wrong number of arguments for 'acl|{sub}' command"))
            }
            _ => Frame::error(format!(
                "ERR unknown subcommand '{}'. Try ACL WHOAMI, ACL LIST or ACL USERS.",
                printable(&sub)
            )),
        }
    }
}

impl ConnAuth {
    /// Whether the connection's user may run `request` (named `name` by the client); the refusal
    /// to send otherwise. A permitted script request gets the user's rules bound to it (see
    /// [`crate::command::script::bind_rules`]), so that the commands the script calls are
    /// checked too, at apply, on every replica.
    pub fn permit(&self, name: &[u8], request: &mut Request) -> Result<(), Frame> {
        self.check(name, request)?;
        if script::runs_script(request) {
            script::bind_rules(request, self.user.as_deref().and_then(User::script_rules));
        }
        Ok(())
    }

    fn check(&self, name: &[u8], request: &Request) -> Result<(), Frame> {
        let Some(user) = &self.user else {
            return Err(Frame::error(NOAUTH));
        };
        let needed = match request.access() {
            _ if is_admin_command(name) => Category::Admin,
            Access::Read => Category::Read,
            Access::Write => Category::Write,
            Access::Admin => Category::Admin,
            Access::Connection => return Ok(()),
        };
        if user.unrestricted() {
            return Ok(());
        }
        if !user.categories.contains(needed) {
            return Err(no_permission(user, name));
        }
        if request_keys(request).iter().all(|k| user.may_access_key(k)) {
            Ok(())
        } else {
            Err(Frame::error("NOPERM No permissions to access a key"))
        }
    }

    /// The user's name, if authenticated.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_deref().map(|u| u.name.as_str())
    }
}

fn no_permission(user: &User, name: &[u8]) -> Frame {
    Frame::error(format!(
        "NOPERM User {} has no permissions to run the '{}' command",
        user.name,
        printable(&String::from_utf8_lossy(name).to_ascii_lowercase())
    ))
}

/// Commands that need the admin category whatever their access kind: the `RAFT.` namespace
/// (snapshots, membership, leadership transfer) and Redis' server-wide destructive commands.
pub fn is_admin_command(name: &[u8]) -> bool {
    const ADMIN: [&[u8]; 8] =
        [b"flushall", b"flushdb", b"shutdown", b"debug", b"save", b"bgsave", b"monitor", b"swapdb"];
    (name.len() > 5
        && name[..5].eq_ignore_ascii_case(b"raft.")
        && !name.eq_ignore_ascii_case(b"raft.version"))
        || ADMIN.iter().any(|a| name.eq_ignore_ascii_case(a))
}

/// The keys a request names.
pub fn request_keys(request: &Request) -> Vec<&[u8]> {
    match request {
        Request::Get(k)
        | Request::StrLen(k)
        | Request::IncrBy { key: k, .. }
        | Request::Append { key: k, .. } => {
            vec![k]
        }
        Request::Set(s) => vec![&s.key],
        Request::Del(keys) | Request::Exists(keys) | Request::MGet(keys) | Request::Watch(keys) => {
            keys.iter().map(|k| &k[..]).collect()
        }
        Request::MSet(pairs) => pairs.iter().map(|(k, _)| &k[..]).collect(),
        Request::KvWrite(c) => c.keys().into_iter().map(|k| &k[..]).collect(),
        Request::KvRead(q) => q.keys().into_iter().map(|k| &k[..]).collect(),
        _ => Vec::new(),
    }
}

/// The first word of a request frame of bulk strings.
fn command_name(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::Array(items) => match items.first() {
            Some(Frame::Bulk(b)) => Some(b.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The words of a request frame (non-bulk items skipped: the parser only makes bulk items).
fn words(frame: &Frame) -> Vec<Bytes> {
    match frame {
        Frame::Array(items) => items.iter().filter_map(|f| f.as_bytes().cloned()).collect(),
        _ => Vec::new(),
    }
}

/// A client-supplied string made safe to log or echo: at most 64 characters, control characters
/// replaced.
fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(words: &[&str]) -> Frame {
        Frame::Array(words.iter().map(|w| Frame::Bulk(Bytes::copy_from_slice(w.as_bytes()))).collect())
    }

    fn starts(f: &Frame, prefix: &str) -> bool {
        matches!(f, Frame::Error(b) if b.starts_with(prefix.as_bytes()))
    }

    fn answer(s: Screen) -> Frame {
        match s {
            Screen::Answer(f) => f,
            Screen::Pass { .. } => panic!("passed"),
        }
    }

    fn gate(file: &str, requirepass: Option<&str>) -> Gate {
        Gate::new(Users::build(requirepass, Some(("users", file))).unwrap())
    }

    #[tokio::test]
    async fn noauth_until_authenticated_then_permissions_apply() {
        let g = gate("user reader on >rpass ~app:* +@read\nuser admin on >apass allkeys +@all\n", None);
        let mut c = g.connection("127.0.0.1:5000");
        assert_eq!(answer(g.screen(&mut c, req(&["GET", "app:1"])).await), Frame::error(NOAUTH));
        assert!(matches!(g.screen(&mut c, req(&["QUIT"])).await, Screen::Pass { .. }));
        assert_eq!(answer(g.screen(&mut c, req(&["ACL", "WHOAMI"])).await), Frame::error(NOAUTH));
        assert_eq!(answer(g.screen(&mut c, req(&["AUTH", "reader", "nope"])).await), Frame::error(WRONGPASS));
        assert_eq!(answer(g.screen(&mut c, req(&["AUTH", "ghost", "rpass"])).await), Frame::error(WRONGPASS));
        assert!(c.user.is_none());
        assert_eq!(answer(g.screen(&mut c, req(&["AUTH", "reader", "rpass"])).await), Frame::ok());
        assert_eq!(answer(g.screen(&mut c, req(&["ACL", "WHOAMI"])).await), Frame::bulk("reader"));
        assert!(answer(g.screen(&mut c, req(&["ACL", "LIST"])).await).is_error());

        let mut get = Request::from_args(vec![Bytes::from("GET"), Bytes::from("app:1")]).unwrap();
        assert_eq!(c.permit(b"GET", &mut get), Ok(()));
        let mut other = Request::from_args(vec![Bytes::from("GET"), Bytes::from("secret")]).unwrap();
        assert_eq!(c.permit(b"GET", &mut other), Err(Frame::error("NOPERM No permissions to access a key")));
        let mut set =
            Request::from_args(vec![Bytes::from("set"), Bytes::from("app:1"), Bytes::from("v")]).unwrap();
        assert_eq!(
            c.permit(b"SET", &mut set),
            Err(Frame::error("NOPERM User reader has no permissions to run the 'set' command"))
        );
        let mut snap = Request::from_args(vec![Bytes::from("RAFT.SNAPSHOT")]).unwrap();
        assert!(c.permit(b"RAFT.SNAPSHOT", &mut snap).is_err());
        assert!(is_admin_command(b"FLUSHALL") && is_admin_command(b"raft.member.add"));
        assert!(!is_admin_command(b"get") && !is_admin_command(b"raft."));
        let mut ping = Request::from_args(vec![Bytes::from("PING")]).unwrap();
        assert_eq!(c.permit(b"PING", &mut ping), Ok(()));

        let mut a = g.connection("127.0.0.1:5001");
        let hello = g.screen(&mut a, req(&["HELLO", "3", "AUTH", "admin", "apass", "SETNAME", "x"])).await;
        match hello {
            Screen::Pass { frame, .. } => assert_eq!(frame, req(&["HELLO", "3", "SETNAME", "x"])),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.user_name(), Some("reader"));
        assert_eq!(a.permit(b"RAFT.SNAPSHOT", &mut snap), Ok(()));
        let list = answer(g.screen(&mut a, req(&["acl", "list"])).await);
        let Frame::Array(lines) = list else { panic!("{list:?}") };
        assert_eq!(lines[0], Frame::bulk("user admin on #<redacted> ~* +@all"));
        assert_eq!(lines[1], Frame::bulk("user reader on #<redacted> ~app:* +@read"));
    }

    #[tokio::test]
    async fn scripts_carry_the_rules_of_a_restricted_user_and_nothing_otherwise() {
        use engine::kv::{Command, Query, ScriptCommand, ScriptQuery};
        let g = gate("user app on >p ~app:* ~c:? +@read +@write\nuser admin on >a allkeys +@all\n", None);
        let eval = |words: &[&str]| {
            Request::from_args(words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()).unwrap()
        };
        let rules = |r: &Request| match r {
            Request::KvWrite(Command::Script(ScriptCommand::Eval { acl, .. }))
            | Request::KvRead(Query::Script(ScriptQuery::Eval { acl, .. })) => acl.clone(),
            other => panic!("{other:?}"),
        };
        let mut app = g.connection("127.0.0.1:7000");
        assert_eq!(answer(g.screen(&mut app, req(&["AUTH", "app", "p"])).await), Frame::ok());
        let mut admin = g.connection("127.0.0.1:7001");
        assert_eq!(answer(g.screen(&mut admin, req(&["AUTH", "admin", "a"])).await), Frame::ok());
        for words in
            [&["EVAL", "return 1", "1", "app:1"][..], &["EVALSHA_RO", "ab", "0"], &["EVAL_RO", "x", "0"]]
        {
            let mut r = eval(words);
            assert_eq!(app.permit(words[0].as_bytes(), &mut r), Ok(()));
            let acl = rules(&r).expect("a restricted user's script carries its rules");
            assert_eq!((&acl.user[..], acl.read, acl.write, acl.admin), (&b"app"[..], true, true, false));
            assert_eq!(acl.key_patterns, vec![Bytes::from("app:*"), Bytes::from("c:?")]);
            let mut r = eval(words);
            assert_eq!(admin.permit(words[0].as_bytes(), &mut r), Ok(()));
            assert_eq!(rules(&r), None, "an unrestricted user's script carries nothing");
        }
        // The script's declared keys are still checked at the door.
        let mut r = eval(&["EVAL", "return 1", "1", "other"]);
        assert_eq!(app.permit(b"EVAL", &mut r), Err(Frame::error("NOPERM No permissions to access a key")));
    }

    #[tokio::test]
    async fn requirepass_is_the_default_users_password_and_failures_are_limited() {
        let g = gate("", Some("s3cret"));
        let mut c = g.connection("10.1.2.3:4000");
        assert!(starts(&answer(g.screen(&mut c, req(&["HELLO", "3"])).await), "NOAUTH"));
        for _ in 0..super::super::limit::FREE_FAILURES + 1 {
            assert_eq!(answer(g.screen(&mut c, req(&["AUTH", "wrong"])).await), Frame::error(WRONGPASS));
        }
        // Blocked now, even with the right password; another address is not.
        let refused = answer(g.screen(&mut c, req(&["AUTH", "s3cret"])).await);
        assert!(starts(&refused, "WRONGPASS too many"), "{refused:?}");
        let mut d = g.connection("10.1.2.4:4000");
        assert_eq!(answer(g.screen(&mut d, req(&["AUTH", "s3cret"])).await), Frame::ok());
        assert_eq!(answer(g.screen(&mut d, req(&["ACL", "WHOAMI"])).await), Frame::bulk("default"));
    }

    #[tokio::test]
    async fn without_passwords_everything_is_allowed_and_auth_says_so() {
        let g = Gate::new(Users::open());
        let mut c = g.connection("127.0.0.1:1");
        assert!(matches!(g.screen(&mut c, req(&["SET", "k", "v"])).await, Screen::Pass { .. }));
        let e = answer(g.screen(&mut c, req(&["AUTH", "x"])).await);
        assert!(starts(&e, "ERR AUTH <password> called without"));
        assert_eq!(answer(g.screen(&mut c, req(&["ACL", "WHOAMI"])).await), Frame::bulk("default"));
    }
}
