//! Client authentication and ACL-lite authorisation, after Redis 6+ ACLs.
//!
//! A node knows a set of [`User`]s (the [`Users`] database), built at start from `--requirepass`
//! / `--requirepass-file` (the password of the `default` user) and `--users-file` (lines in a
//! subset of Redis' ACL file syntax, see [`Users::parse_file`]). Each user has:
//! - zero or more passwords, kept as Argon2id PHC strings (`#$argon2id$...`, made by
//!   `raft-kv passwd`) or, for passwords the node was given in clear (`--requirepass`, `>pass`),
//!   as an HMAC-SHA256 under a key drawn at start: the clear text never stays in memory longer
//!   than parsing takes, and no secret is ever printed (`ACL LIST` shows `#<redacted>`);
//! - the command categories it may run: [`Category::Read`], [`Category::Write`],
//!   [`Category::Admin`] (connection commands such as `PING`, `HELLO`, `CLIENT`, `INFO` need none);
//! - the key patterns it may touch (Redis glob patterns, `~pattern`); every key a command names
//!   must match one of them.
//!
//! Scripts: `EVAL` is checked like any command (its category, its declared `KEYS`), and a
//! restricted user's rules are then copied into the script ([`User::script_rules`]) so that the
//! state machine checks every `redis.call` inside it against them, identically on every replica
//! (the users file is per node and never read at apply).
//!
//! Invariants:
//! - With no password and no users file the `default` user has no password and every right, and
//!   a connection starts authenticated as it (Redis' behaviour); so it does when a users file
//!   declares `user default on nopass ...` (with that line's rights). Otherwise a connection starts
//!   unauthenticated and every command but `AUTH`, `HELLO` and `QUIT` is answered `-NOAUTH`.
//! - Authentication fails the same way (`-WRONGPASS`) for an unknown user, a disabled user and a
//!   wrong password, so a client cannot probe for user names; the time an Argon2 check takes is
//!   spent in every case (an unknown user is checked against a dummy hash).
//! - Failed attempts are logged (peer address and user name, never the password) and limited per
//!   peer address ([`limit::Limiter`]); Argon2 checks run one at a time off the network threads.

pub mod limit;
pub mod session;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bytes::Bytes;
use engine::kv::script::ScriptAcl;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The user a connection is when it has not named one (`AUTH password`).
pub const DEFAULT_USER: &str = "default";

/// A command category of the ACL-lite model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// Commands that read keys (`GET`, `MGET`, `EXISTS`, `DBSIZE`, ...).
    Read,
    /// Commands that change keys (`SET`, `DEL`, `INCR`, ...).
    Write,
    /// Administrative commands: snapshots, membership, leadership transfer, flushing everything,
    /// `ACL LIST`.
    Admin,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 3] = [Category::Read, Category::Write, Category::Admin];

    /// The name used in users files and error messages (`read`, `write`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// A set of categories.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Categories(u8);

impl Categories {
    /// Every category.
    pub fn all() -> Categories {
        Categories(Category::ALL.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Category) -> bool {
        self.0 & c.bit() != 0
    }

    fn insert(&mut self, c: Category) {
        self.0 |= c.bit();
    }

    fn remove(&mut self, c: Category) {
        self.0 &= !c.bit();
    }
}

impl fmt::Debug for Categories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(Category::ALL.iter().filter(|c| self.contains(**c)).map(|c| c.name())).finish()
    }
}

/// One stored password. Never printed (its `Debug` is redacted).
#[derive(Clone)]
enum Secret {
    /// An Argon2 PHC string from a users file.
    Argon2(String),
    /// HMAC-SHA256 of a password given in clear, under the database's key.
    Keyed([u8; 32]),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One user.
#[derive(Clone, Debug)]
pub struct User {
    /// The name (`AUTH name password`).
    pub name: String,
    /// Whether the user may authenticate at all (`on` / `off`).
    pub enabled: bool,
    /// `nopass`: any password is accepted.
    pub nopass: bool,
    /// Its passwords; any one of them is accepted.
    secrets: Vec<Secret>,
    /// The categories it may run.
    pub categories: Categories,
    /// The key patterns it may touch (Redis glob syntax); `*` for all keys.
    pub key_patterns: Vec<Vec<u8>>,
}

impl User {
    /// Whether this user may touch `key`.
    pub fn may_access_key(&self, key: &[u8]) -> bool {
        self.key_patterns.iter().any(|p| p.as_slice() == b"*" || crate::command::glob_match(p, key, false))
    }

    /// Whether the user may run every command on every key (no check needed).
    pub fn unrestricted(&self) -> bool {
        self.categories == Categories::all() && self.key_patterns.iter().any(|p| p.as_slice() == b"*")
    }

    /// The rules a script of this user runs under, copied into the script's log entry (see
    /// `engine::kv::script`): `None` for an unrestricted user, so that its entries do not grow.
    pub fn script_rules(&self) -> Option<Arc<ScriptAcl>> {
        if self.unrestricted() {
            return None;
        }
        Some(Arc::new(ScriptAcl {
            user: Bytes::from(self.name.clone()),
            read: self.categories.contains(Category::Read),
            write: self.categories.contains(Category::Write),
            admin: self.categories.contains(Category::Admin),
            key_patterns: self.key_patterns.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
        }))
    }

    /// The user's rules in users-file syntax, passwords redacted (`ACL LIST`).
    pub fn describe(&self) -> String {
        let mut out = format!("user {} {}", self.name, if self.enabled { "on" } else { "off" });
        if self.nopass {
            out.push_str(" nopass");
        }
        for _ in &self.secrets {
            out.push_str(" #<redacted>");
        }
        if self.key_patterns.is_empty() {
            out.push_str(" resetkeys");
        }
        for p in &self.key_patterns {
            out.push_str(" ~");
            out.push_str(&String::from_utf8_lossy(p));
        }
        if self.categories == Categories::all() {
            out.push_str(" +@all");
        } else if self.categories == Categories::default() {
            out.push_str(" -@all");
        } else {
            for c in Category::ALL.iter().filter(|c| self.categories.contains(**c)) {
                out.push_str(" +@");
                out.push_str(c.name());
            }
        }
        out
    }
}

/// A users file or password that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A line of a users file is wrong.
    #[error("{file}:{line}: {message}")]
    Line {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never containing a password).
        message: String,
    },
    /// The file cannot be read.
    #[error("cannot read {file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// Something else (an empty password, a user defined twice).
    #[error("{0}")]
    Invalid(String),
}

/// Why an authentication failed (the client is told only `WRONGPASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AuthFailure {
    /// No such user.
    #[error("no such user")]
    UnknownUser,
    /// The user is `off`.
    #[error("user is disabled")]
    Disabled,
    /// The password matched none of the user's.
    #[error("wrong password")]
    WrongPassword,
}

/// The users a node knows.
pub struct Users {
    /// By name.
    users: BTreeMap<String, Arc<User>>,
    /// Key for passwords given in clear.
    key: [u8; 32],
    /// An Argon2 hash checked when the user is unknown, so that the failure takes as long.
    dummy: String,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users").field("users", &self.users).finish()
    }
}

impl Users {
    /// No authentication: the `default` user without a password and with every right.
    pub fn open() -> Users {
        let mut users = Users::empty();
        users.users.insert(DEFAULT_USER.into(), Arc::new(everything(DEFAULT_USER, true, Vec::new())));
        users
    }

    fn empty() -> Users {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Users { users: BTreeMap::new(), key, dummy: String::new() }
    }

    /// The database for `requirepass` (the `default` user's password, every right) and the
    /// users file's text (`file` names it in errors). Either may be absent; with neither,
    /// [`Users::open`].
    pub fn build(requirepass: Option<&str>, users_file: Option<(&str, &str)>) -> Result<Users, ConfigError> {
        if requirepass.is_none() && users_file.is_none() {
            return Ok(Users::open());
        }
        let mut users = Users::empty();
        if let Some((file, text)) = users_file {
            users.parse_file(file, text)?;
        }
        if let Some(pass) = requirepass {
            if pass.is_empty() {
                return Err(ConfigError::Invalid("the password given with --requirepass is empty".into()));
            }
            let secret = Secret::Keyed(users.keyed(pass.as_bytes()));
            match users.users.get_mut(DEFAULT_USER) {
                Some(_) => {
                    return Err(ConfigError::Invalid(format!(
                        "the users file defines '{DEFAULT_USER}' and --requirepass sets its password: use one"
                    )))
                }
                None => {
                    users
                        .users
                        .insert(DEFAULT_USER.into(), Arc::new(everything(DEFAULT_USER, false, vec![secret])));
                }
            }
        }
        users.dummy = hash_password("dummy password for unknown users")
            .map_err(|e| ConfigError::Invalid(format!("cannot hash: {e}")))?;
        Ok(users)
    }

    /// Reads `--requirepass-file` / `--users-file` from disk and builds the database.
    pub fn load(
        requirepass: Option<&str>,
        requirepass_file: Option<&Path>,
        users_file: Option<&Path>,
    ) -> Result<Users, ConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError::Read { file: p.display().to_string(), message: e.to_string() })
        };
        let from_file = match requirepass_file {
            Some(p) => {
                let text = read(p)?;
                // The first line, without its line ending, is the password.
                Some(text.lines().next().unwrap_or("").to_string())
            }
            None => None,
        };
        if requirepass.is_some() && from_file.is_some() {
            return Err(ConfigError::Invalid("give --requirepass or --requirepass-file, not both".into()));
        }
        let file_text = match users_file {
            Some(p) => Some((p.display().to_string(), read(p)?)),
            None => None,
        };
        Users::build(
            requirepass.or(from_file.as_deref()),
            file_text.as_ref().map(|(name, text)| (name.as_str(), text.as_str())),
        )
    }

    /// Whether connections must authenticate before running commands.
    pub fn required(&self) -> bool {
        self.initial_user().is_none()
    }

    /// The user a new connection is authenticated as, if any: the `default` user when it is
    /// enabled and has no password (`nopass`), as in Redis.
    pub fn initial_user(&self) -> Option<Arc<User>> {
        self.users.get(DEFAULT_USER).filter(|u| u.enabled && u.nopass).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }

    /// Whether `AUTH password` (for the `default` user) makes sense: the user exists and is not
    /// `nopass` (Redis answers an error otherwise).
    pub fn default_has_password(&self) -> bool {
        self.users.get(DEFAULT_USER).is_some_and(|u| !u.nopass)
    }

    /// Checks `password` for `user`. Slow on purpose when an Argon2 hash is involved (tens of
    /// milliseconds): call it off the network threads ([`session`] does).
    pub fn authenticate(&self, user: &str, password: &[u8]) -> Result<Arc<User>, AuthFailure> {
        let Some(u) = self.users.get(user) else {
            // Spend the time a real check takes.
            let _ = verify_argon2(&self.dummy, password);
            return Err(AuthFailure::UnknownUser);
        };
        let mut ok = u.nopass;
        if !ok {
            let keyed = self.keyed(password);
            for s in &u.secrets {
                ok = match s {
                    Secret::Keyed(k) => bool::from(k.ct_eq(&keyed)),
                    Secret::Argon2(phc) => verify_argon2(phc, password),
                };
                if ok {
                    break;
                }
            }
        }
        match (ok, u.enabled) {
            (true, true) => Ok(u.clone()),
            (true, false) => Err(AuthFailure::Disabled),
            (false, _) => Err(AuthFailure::WrongPassword),
        }
    }

    fn keyed(&self, password: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Parses a users file: one user per line, `#` comments and blank lines ignored.
    ///
    /// ```text
    /// user NAME RULE...
    /// ```
    /// Rules, applied left to right to a user that starts `off`, without passwords, categories
    /// or keys:
    /// `on` / `off`; `#<argon2 PHC string>` (from `raft-kv passwd`); `>password` (in clear:
    /// avoid); `nopass`; `resetpass`; `+@read`, `+@write`, `+@admin`, `+@all` (or
    /// `allcommands`), `-@...` to take one away, `nocommands`; `~pattern` (Redis glob),
    /// `allkeys` (= `~*`), `resetkeys`.
    pub fn parse_file(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        for (n, line) in text.lines().enumerate() {
            let err = |message: String| ConfigError::Line { file: file.to_string(), line: n + 1, message };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            if words.next() != Some("user") {
                return Err(err("expected 'user NAME RULE...'".into()));
            }
            let name = words.next().ok_or_else(|| err("missing user name".into()))?;
            if !name.chars().all(|c| c.is_ascii_graphic()) {
                return Err(err("a user name is printable ASCII without spaces".into()));
            }
            let mut user = User {
                name: name.to_string(),
                enabled: false,
                nopass: false,
                secrets: Vec::new(),
                categories: Categories::default(),
                key_patterns: Vec::new(),
            };
            for rule in words {
                self.apply_rule(&mut user, rule).map_err(err)?;
            }
            if self.users.contains_key(name) {
                return Err(err(format!("user '{name}' is defined twice")));
            }
            self.users.insert(name.to_string(), Arc::new(user));
        }
        Ok(())
    }

    fn apply_rule(&self, user: &mut User, rule: &str) -> Result<(), String> {
        match rule {
            "on" => user.enabled = true,
            "off" => user.enabled = false,
            "nopass" => {
                user.nopass = true;
                user.secrets.clear();
            }
            "resetpass" => {
                user.nopass = false;
                user.secrets.clear();
            }
            "allcommands" | "+@all" => user.categories = Categories::all(),
            "nocommands" | "-@all" => user.categories = Categories::default(),
            "allkeys" => user.key_patterns = vec![b"*".to_vec()],
            "resetkeys" => user.key_patterns.clear(),
            _ => {
                if let Some(hash) = rule.strip_prefix('#') {
                    PasswordHash::new(hash).map_err(|_| {
                        "a '#' rule takes an Argon2 PHC string ($argon2id$...), as `raft-kv passwd` prints".to_string()
                    })?;
                    user.nopass = false;
                    user.secrets.push(Secret::Argon2(hash.to_string()));
                } else if let Some(pass) = rule.strip_prefix('>') {
                    if pass.is_empty() {
                        return Err("empty password after '>'".into());
                    }
                    user.nopass = false;
                    user.secrets.push(Secret::Keyed(self.keyed(pass.as_bytes())));
                } else if let Some(pattern) = rule.strip_prefix('~') {
                    if pattern.is_empty() {
                        return Err("empty key pattern after '~'".into());
                    }
                    user.key_patterns.push(pattern.as_bytes().to_vec());
                } else if let Some(cat) = rule.strip_prefix("+@") {
                    user.categories.insert(Category::parse(cat).ok_or_else(|| unknown_category(cat))?);
                } else if let Some(cat) = rule.strip_prefix("-@") {
                    user.categories.remove(Category::parse(cat).ok_or_else(|| unknown_category(cat))?);
                } else {
                    // Never echo the rule: it could be a mistyped password.
                    return Err(format!(
                        "unknown rule starting with '{}' (rules: on off #HASH >PASS nopass resetpass +@read +@write +@admin +@all -@CAT allcommands nocommands ~PATTERN allkeys resetkeys)",
                        rule.chars().next().unwrap_or(' ')
                    ));
                }
            }
        }
        Ok(())
    }
}

fn unknown_category(cat: &str) -> String {
    format!("unknown category '@{cat}' (read, write, admin, all)")
}

fn everything(name: &str, nopass: bool, secrets: Vec<Secret>) -> User {
    User {
        name: name.into(),
        enabled: true,
        nopass,
        secrets,
        categories: Categories::all(),
        key_patterns: vec![b"*".to_vec()],
    }
}

/// Hashes a password for a users file (Argon2id, the crate's default parameters, a random
/// salt); the result goes after `#`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_argon2(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
