//! One script run: a fresh, sandboxed Lua 5.1 state, the `redis` library, Redis' conversions
//! between Lua values and replies, the instruction budget and the error texts.
//!
//! Invariant: [`run`] is a pure function of (body, keys, args, the caller's rules carried by the
//! entry, the state it reads and writes, the log time): the Lua state is new for every run and
//! everything that could differ between replicas (clock, randomness, addresses, wall time) is
//! removed or made deterministic (see the [module docs](super)). Every call is checked against
//! the caller's rules (when the entry carries some) before it runs.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};

use super::rand48::Rand48;
use super::{parser, ScriptAcl, NOT_FROM_SCRIPT_ERR, READ_ONLY_SCRIPT_ERR};
use crate::kv::command::{Command, Query, Reply};
use crate::kv::store::{execute as execute_one, Db, View};
use crate::kv::txn::TxItem;

/// Most Lua VM instructions one run may execute (about 50-100 ms of one core). The same on every
/// replica: a constant of the build, never configuration (replicas must agree).
pub const INSTRUCTION_BUDGET: u64 = 10_000_000;

/// What one `redis.call`/`redis.pcall` counts against [`INSTRUCTION_BUDGET`].
pub const CALL_COST: u64 = 100;

/// Most bytes one run may allocate in all. The garbage collector is stopped during a run, so
/// this bounds the total allocation (churn included), not only the memory in use: the work of
/// every operation that allocates (concatenation, `string.rep`, `string.sub`, `table.concat`)
/// is bounded with it.
pub const MEMORY_LIMIT: usize = 128 * 1024 * 1024;

/// Library functions whose work grows with their input without allocating are wrapped to
/// count one budget unit per this many bytes (or table slots) of input.
pub(super) const BYTES_PER_UNIT: u64 = 8;

/// Steps of the pattern matcher ([`super::pattern`]) that count as one budget unit: a step took
/// 5-10 ns (release build, 2-vCPU VM under load), a Lua VM instruction about as long, so a
/// runaway pattern stops after 100-200 ms like a runaway loop, while a `gsub` over 1 MiB with a
/// simple pattern (about 2.5 steps per byte) uses an eighth of the budget.
const STEPS_PER_UNIT: u64 = 2;

/// The hook runs every this many instructions.
const HOOK_EVERY: u32 = 1000;

/// Deepest nesting of arrays in a script's reply (the snapshot codec accepts 32 levels, and a
/// script inside `MULTI` adds one).
const MAX_REPLY_NESTING: usize = 30;

/// The chunk name, as Redis names it (errors read `user_script:LINE: ...`).
const CHUNK_NAME: &str = "@user_script";

/// What the script may touch.
pub(crate) enum Access<'a, 'b> {
    /// The key space of the entry being applied (writes allowed).
    Write(&'a mut Db<'b>),
    /// A read-only view (`EVAL_RO`, `EVALSHA_RO`).
    Read(&'a View<'b>),
}

/// How a run ended.
pub(crate) enum Outcome {
    /// The body does not compile (or has a bad shebang): nothing ran.
    NotCompiled(String),
    /// The script raised an error (the full error text): its writes must be undone.
    Failed(String),
    /// The script's reply.
    Done(Reply),
}

/// An error raised with a final text (no `ERR ` is added): the errors of `redis.call`, the
/// budget.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// The SHA1 of `body` as 40 lower-case hex digits (the script's name in the cache).
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// A parsed `#!lua ...` first line.
pub(crate) struct Shebang {
    /// Bytes of the line, without its newline (the code compiled starts at the newline, so line
    /// numbers stay those of the body).
    pub(crate) len: usize,
    /// `flags=no-writes`.
    pub(crate) no_writes: bool,
}

/// Parses the shebang line (Redis 7's rules), if the body has one.
pub(crate) fn shebang(body: &[u8]) -> Result<Option<Shebang>, String> {
    if !body.starts_with(b"#!") {
        return Ok(None);
    }
    let Some(len) = body.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid script shebang".to_owned());
    };
    let line = String::from_utf8_lossy(&body[2..len]);
    let mut parts = line.split_ascii_whitespace();
    let Some(engine) = parts.next() else {
        return Err("ERR Invalid engine in script shebang".to_owned());
    };
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Could not find scripting engine '{engine}'"));
    }
    let mut no_writes = false;
    for part in parts {
        let Some(flags) = part.get(..6).filter(|p| p.eq_ignore_ascii_case("flags=")).map(|_| &part[6..])
        else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => no_writes = true,
                "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => return Err(format!("ERR Unexpected flag in script shebang: {other}")),
            }
        }
    }
    Ok(Some(Shebang { len, no_writes }))
}

/// Checks that `body` compiles (for `SCRIPT LOAD`); `Err` is Redis' compile error text.
pub(crate) fn compile_check(body: &[u8]) -> Result<(), String> {
    let code = match shebang(body)? {
        Some(s) => &body[s.len..],
        None => body,
    };
    let lua = new_state().map_err(|e| format!("ERR {e}"))?;
    compile(&lua, code).map(|_| ())
}

fn compile(lua: &Lua, code: &[u8]) -> Result<mlua::Function, String> {
    lua.load(code).set_name(CHUNK_NAME).set_mode(ChunkMode::Text).into_function().map_err(|e| {
        let text = match &e {
            mlua::Error::SyntaxError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        format!("ERR Error compiling script (new function): {text}")
    })
}

fn new_state() -> mlua::Result<Lua> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::new())?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    lua.gc_stop();
    Ok(lua)
}

/// Lua code that locks the environment down (run once per state, before the script).
const PRELUDE: &str = r#"
local check, charge, rep = ...
local pcall, xpcall, type, getmetatable, tostring, error, setmetatable, rawset, loadstring =
    pcall, xpcall, type, getmetatable, tostring, error, setmetatable, rawset, loadstring
local function pass(...) check() return ... end
-- C functions whose work grows with their input but allocates little: count the input.
local function by_len(f) return function(s, ...) if type(s) == 'string' then charge(#s) end return f(s, ...) end end
local function by_slots(f, factor) return function(t, ...) if type(t) == 'table' then charge(#t * factor) end return f(t, ...) end end
rawset(string, 'byte', by_len(string.byte))
rawset(string, 'rep', rep)
rawset(table, 'sort', by_slots(table.sort, 32))
rawset(table, 'insert', by_slots(table.insert, 1))
rawset(table, 'remove', by_slots(table.remove, 1))
rawset(table, 'concat', by_slots(table.concat, 1))
rawset(table, 'getn', by_slots(table.getn, 1))
rawset(_G, 'unpack', by_slots(unpack, 1))
rawset(_G, 'pcall', function(...) return pass(pcall(...)) end)
rawset(_G, 'xpcall', function(...) return pass(xpcall(...)) end)
rawset(_G, 'tostring', function(v)
    local t = type(v)
    if t == 'table' or t == 'function' or t == 'userdata' or t == 'thread' then
        local mt = getmetatable(v)
        if not (type(mt) == 'table' and mt.__tostring) then return t end
    end
    return tostring(v)
end)
rawset(_G, 'loadstring', function(s, name)
    if type(s) == 'string' and s:byte(1) == 27 then return nil, 'binary chunks are not allowed' end
    return loadstring(s, name)
end)
for _, name in ipairs({'print', 'dofile', 'loadfile', 'load', 'coroutine', 'gcinfo', 'module',
                       'require', 'package', 'newproxy', 'collectgarbage'}) do
    rawset(_G, name, nil)
end
setmetatable(_G, {
    __index = function(_, k)
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
})
"#;

/// Runs a script (see the module docs of [`super`]). `sha` names it in error texts; every call
/// is checked against `acl` when there is one.
pub(crate) fn run(
    access: Access<'_, '_>,
    sha: &[u8],
    body: &Bytes,
    keys: &[Bytes],
    args: &[Bytes],
    acl: Option<&ScriptAcl>,
) -> Outcome {
    let shebang = match shebang(body) {
        Ok(s) => s,
        Err(e) => return Outcome::NotCompiled(e),
    };
    let read_only = matches!(access, Access::Read(_)) || shebang.as_ref().is_some_and(|s| s.no_writes);
    let code = &body[shebang.map_or(0, |s| s.len)..];
    let lua = match new_state() {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(format!("ERR {e}")),
    };
    let f = match compile(&lua, code) {
        Ok(f) => f,
        Err(e) => return Outcome::NotCompiled(e),
    };
    let sha = String::from_utf8_lossy(sha).into_owned();
    let time = match &access {
        Access::Write(db) => db.time,
        Access::Read(v) => v.time,
    };
    let access = RefCell::new(access);
    let rules = Rules { read_only, acl, time };
    match run_in(&lua, &f, &sha, &access, &rules, keys, args) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(format!("ERR {e}")),
    }
}

/// What every call of one run is checked against, and the time `TIME` answers.
struct Rules<'a> {
    /// Writes are refused (`EVAL_RO`, `no-writes`).
    read_only: bool,
    /// The caller's rules (`None`: unrestricted).
    acl: Option<&'a ScriptAcl>,
    /// The entry's log time (ms).
    time: u64,
}

/// Budget accounting shared by the hook, `redis.call`, the pattern functions and the `pcall` guard.
pub(super) struct Budget {
    used: Cell<u64>,
    exhausted: Cell<bool>,
}

impl Budget {
    /// A new run's budget, nothing used.
    pub(super) fn new() -> Budget {
        Budget { used: Cell::new(0), exhausted: Cell::new(false) }
    }

    /// Matcher steps the run may still take.
    pub(super) fn remaining_steps(&self) -> u64 {
        INSTRUCTION_BUDGET.saturating_sub(self.used.get()).saturating_add(1).saturating_mul(STEPS_PER_UNIT)
    }

    /// Charges `steps` matcher steps.
    pub(super) fn charge_steps(&self, steps: u64) -> mlua::Result<()> {
        self.charge(steps.div_ceil(STEPS_PER_UNIT))
    }

    pub(super) fn charge(&self, n: u64) -> mlua::Result<()> {
        self.used.set(self.used.get().saturating_add(n));
        if self.used.get() > INSTRUCTION_BUDGET {
            self.exhausted.set(true);
        }
        self.check()
    }

    fn check(&self) -> mlua::Result<()> {
        if self.exhausted.get() {
            return Err(mlua::Error::external(Raised(format!(
                "ERR Script exceeded its instruction budget of {INSTRUCTION_BUDGET} Lua instructions"
            ))));
        }
        Ok(())
    }
}

fn run_in(
    lua: &Lua,
    f: &mlua::Function,
    sha: &str,
    access: &RefCell<Access<'_, '_>>,
    rules: &Rules<'_>,
    keys: &[Bytes],
    args: &[Bytes],
) -> mlua::Result<Outcome> {
    let budget = Rc::new(Budget::new());
    let g = lua.globals();
    let check = {
        let budget = budget.clone();
        lua.create_function(move |_, ()| budget.check())?
    };
    install_random(lua, &g)?;
    let redis = lua.create_table()?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|lua, v: Value| lua.create_string(sha1_hex(&arg_bytes(lua, v)?)))?,
    )?;
    redis.raw_set("error_reply", lua.create_function(|lua, v: Value| reply_table(lua, "err", v))?)?;
    redis.raw_set("status_reply", lua.create_function(|lua, v: Value| reply_table(lua, "ok", v))?)?;
    redis.raw_set("log", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.raw_set(
        "setresp",
        lua.create_function(|_, v: i64| match v {
            2 => Ok(()),
            _ => Err(mlua::Error::external(Raised("ERR raft-kv scripts speak RESP2 only".to_owned()))),
        })?,
    )?;
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.raw_set("set_repl", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    for (name, value) in [("LOG_DEBUG", 0), ("LOG_VERBOSE", 1), ("LOG_NOTICE", 2), ("LOG_WARNING", 3)] {
        redis.raw_set(name, value)?;
    }
    for (name, value) in
        [("REPL_NONE", 0), ("REPL_AOF", 1), ("REPL_SLAVE", 2), ("REPL_REPLICA", 2), ("REPL_ALL", 3)]
    {
        redis.raw_set(name, value)?;
    }
    redis.raw_set("REDIS_VERSION", "7.0.0")?;
    redis.raw_set("REDIS_VERSION_NUM", 0x07_00_00)?;
    g.raw_set("redis", redis.clone())?;
    g.raw_set("KEYS", string_array(lua, keys)?)?;
    g.raw_set("ARGV", string_array(lua, args)?)?;
    // The unwrapped xpcall (the prelude wraps the script's own).
    let xpcall: mlua::Function = g.raw_get("xpcall")?;
    let charge = {
        let budget = budget.clone();
        lua.create_function(move |_, n: f64| budget.charge((n.max(0.0) as u64) / BYTES_PER_UNIT))?
    };
    let rep = {
        let budget = budget.clone();
        lua.create_function(move |lua, (s, n, sep): (mlua::LuaString, f64, Option<mlua::LuaString>)| {
            let s = s.as_bytes();
            let sep = sep.as_ref().map(|x| x.as_bytes().to_vec()).unwrap_or_default();
            let n = if n.is_nan() || n < 1.0 { 0 } else { n as u64 };
            let len = (s.len() as u64 + sep.len() as u64).saturating_mul(n);
            if len > MEMORY_LIMIT as u64 {
                return Err(mlua::Error::runtime("not enough memory"));
            }
            budget.charge(len / BYTES_PER_UNIT)?;
            if sep.is_empty() {
                return lua.create_string(s.repeat(n as usize));
            }
            let mut unit = sep;
            unit.extend_from_slice(&s);
            let mut out = unit.repeat(n as usize);
            out.drain(..unit.len() - s.len());
            lua.create_string(&out)
        })?
    };
    super::strlib::install(lua, &g.raw_get::<Table>("string")?, &budget)?;
    lua.load(PRELUDE).set_name("=prelude").set_mode(ChunkMode::Text).call::<()>((check, charge, rep))?;
    let sha_owned = sha.to_owned();
    let handler = lua.create_function(move |lua, err: Value| {
        let text = error_text(err);
        let line = user_line(lua);
        let t = lua.create_table()?;
        t.raw_set(
            "raftkv_error",
            match line {
                Some(l) => format!("{text} script: {sha_owned}, on @user_script:{l}."),
                None => format!("{text} script: {sha_owned}"),
            },
        )?;
        Ok(t)
    })?;
    {
        let hook_budget = budget.clone();
        lua.set_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_, _| {
            hook_budget.charge(u64::from(HOOK_EVERY))?;
            Ok(VmState::Continue)
        })?;
    }
    let result: MultiValue = lua.scope(|scope| {
        let call = |protected: bool| {
            let budget = budget.clone();
            scope.create_function(move |lua, argv: MultiValue| {
                budget.charge(CALL_COST)?;
                let reply = call_command(lua, access, rules, argv);
                match reply {
                    Err(text) if protected => error_table(lua, text),
                    Err(text) => Err(mlua::Error::external(Raised(text))),
                    Ok(Reply::Error(text)) if !protected => Err(mlua::Error::external(Raised(text))),
                    Ok(reply) => reply_to_lua(lua, reply),
                }
            })
        };
        redis.raw_set("call", call(false)?)?;
        redis.raw_set("pcall", call(true)?)?;
        redis.raw_set(
            "acl_check_cmd",
            scope.create_function(move |lua, argv: MultiValue| {
                acl_check_cmd(lua, rules, argv).map_err(|text| mlua::Error::external(Raised(text)))
            })?,
        )?;
        xpcall.call::<MultiValue>((f.clone(), handler.clone()))
    })?;
    lua.remove_hook();
    let mut values = result.into_iter();
    let ok = matches!(values.next(), Some(Value::Boolean(true)));
    let first = values.next().unwrap_or(Value::Nil);
    if !ok {
        return Ok(Outcome::Failed(one_line(match first {
            Value::Table(t) => match t.raw_get::<Value>("raftkv_error")? {
                Value::String(s) => s.to_string_lossy(),
                _ => "ERR script failed".to_owned(),
            },
            // Errors that skip the handler (out of memory, an error in the handler).
            other => format!("{} script: {sha}", error_text(other)),
        })));
    }
    Ok(Outcome::Done(lua_to_reply(&first, 0).unwrap_or_else(Reply::Error)))
}

/// A status or error line as Redis sends it: `\r` and `\n` become spaces (they would end the
/// RESP line).
fn one_line(s: String) -> String {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ")
    } else {
        s
    }
}

/// The text of a raised error value, Redis-style (`ERR ` added unless it is an error reply
/// table or a [`Raised`] error).
fn error_text(err: Value) -> String {
    match err {
        Value::Error(e) => match e.downcast_ref::<Raised>() {
            Some(r) => r.0.clone(),
            None => match &*e {
                mlua::Error::MemoryError(_) => "ERR Script ran out of memory (Lua memory limit)".to_owned(),
                other => format!("ERR {other}"),
            },
        },
        Value::String(s) => format!("ERR {}", s.to_string_lossy()),
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => s.to_string_lossy(),
            _ => "ERR (error object is a table value)".to_owned(),
        },
        Value::Nil => "ERR nil".to_owned(),
        Value::Boolean(b) => format!("ERR {b}"),
        Value::Integer(i) => format!("ERR {i}"),
        Value::Number(n) => format!("ERR {}", number_text(n)),
        other => format!("ERR (error object is a {} value)", other.type_name()),
    }
}

/// The line of the innermost frame of the user's script on the stack.
fn user_line(lua: &Lua) -> Option<usize> {
    (1..200).find_map(|level| {
        lua.inspect_stack(level, |d| {
            let user = d.source().source.is_some_and(|s| s == CHUNK_NAME);
            if user {
                d.current_line()
            } else {
                None
            }
        })?
    })
}

/// `math.random` / `math.randomseed` as Redis defines them (see [`Rand48`]).
fn install_random(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let math: Table = g.raw_get("math")?;
    let state = Rc::new(Cell::new(Rand48::initial()));
    let s = state.clone();
    math.raw_set(
        "random",
        lua.create_function(move |_, bounds: MultiValue| {
            let mut r = s.get();
            let x = r.next_unit();
            s.set(r);
            let int = |v: &Value| -> mlua::Result<i64> {
                match v {
                    Value::Integer(i) => Ok(*i as i32 as i64),
                    Value::Number(n) => Ok(*n as i32 as i64),
                    _ => Err(mlua::Error::runtime("bad argument to 'random' (number expected)")),
                }
            };
            let v: Vec<Value> = bounds.into_iter().collect();
            match v.as_slice() {
                [] => Ok(x),
                [u] => {
                    let u = int(u)?;
                    if u < 1 {
                        return Err(mlua::Error::runtime("bad argument #1 to 'random' (interval is empty)"));
                    }
                    Ok((x * u as f64).floor() + 1.0)
                }
                [l, u] => {
                    let (l, u) = (int(l)?, int(u)?);
                    if l > u {
                        return Err(mlua::Error::runtime("bad argument #2 to 'random' (interval is empty)"));
                    }
                    Ok((x * (u - l + 1) as f64).floor() + l as f64)
                }
                _ => Err(mlua::Error::runtime("wrong number of arguments")),
            }
        })?,
    )?;
    math.raw_set(
        "randomseed",
        lua.create_function(move |_, seed: f64| {
            state.set(Rand48::seeded(seed as i32));
            Ok(())
        })?,
    )?;
    Ok(())
}

fn string_array(lua: &Lua, items: &[Bytes]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(t)
}

/// `redis.error_reply` / `redis.status_reply`: `{err=...}` / `{ok=...}`.
fn reply_table(lua: &Lua, field: &str, v: Value) -> mlua::Result<Value> {
    let Value::String(s) = v else {
        return error_table(lua, "ERR wrong number or type of arguments".to_owned());
    };
    let t = lua.create_table()?;
    let mut text = s.as_bytes().to_vec();
    if field == "err" && !text.contains(&b' ') {
        text.splice(0..0, b"ERR ".iter().copied());
    }
    t.raw_set(field, lua.create_string(&text)?)?;
    Ok(Value::Table(t))
}

fn error_table(lua: &Lua, text: String) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set("err", text)?;
    Ok(Value::Table(t))
}

/// A `redis.call` argument as bytes: strings as they are, numbers as Redis renders them.
fn arg_bytes(lua: &Lua, v: Value) -> mlua::Result<Vec<u8>> {
    let _ = lua;
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(number_text(n).into_bytes()),
        _ => Err(mlua::Error::external(Raised(
            "ERR Lua redis lib command arguments must be strings or integers".to_owned(),
        ))),
    }
}

/// A Lua number as Redis passes it to a command: integral values in range as integers,
/// others in the shortest form that reads back the same, `%.17g`-like exponents.
fn number_text(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9.2e18 {
        return format!("{}", n as i64);
    }
    if n.is_nan() {
        return "nan".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let s = format!("{n:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Runs one `redis.call`: `Err` is an error the call itself raises (bad arguments, unknown or
/// refused command); a command's own error comes back as `Ok(Reply::Error)`.
fn call_command(
    lua: &Lua,
    access: &RefCell<Access<'_, '_>>,
    rules: &Rules<'_>,
    argv: MultiValue,
) -> Result<Reply, String> {
    if argv.is_empty() {
        return Err("ERR Please specify at least one argument for this redis lib call".to_owned());
    }
    let mut args = Vec::with_capacity(argv.len());
    for v in argv {
        match arg_bytes(lua, v) {
            Ok(b) => args.push(Bytes::from(b)),
            Err(_) => {
                return Err("ERR Lua redis lib command arguments must be strings or integers".to_owned())
            }
        }
    }
    let time = rules.time;
    if args[0].eq_ignore_ascii_case(b"time") && args.len() == 1 {
        // The entry's log time (see the module docs), as TIME's [seconds, microseconds]. Needs no
        // ACL category, as `TIME` at the top level.
        return Ok(Reply::Array(vec![
            Reply::Bulk(Bytes::from((time / 1000).to_string())),
            Reply::Bulk(Bytes::from(((time % 1000) * 1000).to_string())),
        ]));
    }
    let Some(parse) = parser() else {
        return Err("ERR this node has no command parser for scripts".to_owned());
    };
    let name = args[0].clone();
    let item = parse(args)?;
    if matches!(
        item,
        TxItem::Write(Command::Multi { .. } | Command::Sweep { .. } | Command::Script(_))
            | TxItem::Read(Query::Script(_))
    ) {
        return Err(NOT_FROM_SCRIPT_ERR.to_owned());
    }
    // The caller's rules, before the read-only rule (Redis' order: ACL, then write allowed).
    if let Some(acl) = rules.acl {
        acl.check(&name, &item)?;
    }
    let mut access = access.borrow_mut();
    match (item, &mut *access) {
        (TxItem::Write(_), _) if rules.read_only => Err(READ_ONLY_SCRIPT_ERR.to_owned()),
        (TxItem::Write(_), Access::Read(_)) => Err(READ_ONLY_SCRIPT_ERR.to_owned()),
        (TxItem::Write(c), Access::Write(db)) => Ok(execute_one(db, &c)),
        (TxItem::Read(q), Access::Write(db)) => Ok(db.view().query(&q)),
        (TxItem::Read(q), Access::Read(view)) => Ok(view.query(&q)),
    }
}

/// `redis.acl_check_cmd(command, args...)` (Redis 7): may the caller run this command with these
/// arguments through `redis.call`? Checks the caller's rules only (not the read-only rule); an
/// unknown command, wrong arity or bad arguments raise `Invalid command passed to
/// redis.acl_check_cmd()`, as Redis does, also for what scripts may never call.
fn acl_check_cmd(lua: &Lua, rules: &Rules<'_>, argv: MultiValue) -> Result<bool, String> {
    if argv.is_empty() {
        return Err("ERR Please specify at least one argument for this redis lib call".to_owned());
    }
    let mut args = Vec::with_capacity(argv.len());
    for v in argv {
        let b = arg_bytes(lua, v)
            .map_err(|_| "ERR Lua redis lib command arguments must be strings or integers")?;
        args.push(Bytes::from(b));
    }
    if args[0].eq_ignore_ascii_case(b"time") && args.len() == 1 {
        return Ok(true); // TIME needs no category (see `call_command`).
    }
    let Some(parse) = parser() else {
        return Err("ERR this node has no command parser for scripts".to_owned());
    };
    let name = args[0].clone();
    let item = parse(args).map_err(|_| "ERR Invalid command passed to redis.acl_check_cmd()".to_owned())?;
    Ok(rules.acl.is_none_or(|acl| acl.check(&name, &item).is_ok()))
}

/// A reply as the script sees it (Redis' RESP2 -> Lua conversion; errors were handled).
fn reply_to_lua(lua: &Lua, reply: Reply) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Ok => {
            let t = lua.create_table()?;
            t.raw_set("ok", "OK")?;
            Value::Table(t)
        }
        Reply::Status(s) => {
            let t = lua.create_table()?;
            t.raw_set("ok", s)?;
            Value::Table(t)
        }
        Reply::Nil => Value::Boolean(false),
        Reply::Bulk(b) => Value::String(lua.create_string(&b)?),
        Reply::Int(i) => Value::Integer(i),
        Reply::Error(e) => error_table(lua, e)?,
        Reply::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, reply_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A script's return value as a reply (Redis' Lua -> RESP2 conversion): numbers truncated to
/// integers, `true` 1, `false`/`nil` nil, `{err=}`/`{ok=}` tables error/status, other tables
/// arrays of their items `1..n` up to the first nil.
fn lua_to_reply(v: &Value, depth: usize) -> Result<Reply, String> {
    Ok(match v {
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(i) => Reply::Int(*i),
        Value::Number(n) => Reply::Int(if n.is_nan() { 0 } else { *n as i64 }),
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Ok(Reply::Error(one_line(e.to_string_lossy())));
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                let s = one_line(s.to_string_lossy());
                return Ok(if s == "OK" { Reply::Ok } else { Reply::Status(s) });
            }
            if depth >= MAX_REPLY_NESTING {
                return Err(format!(
                    "ERR reached lua stack limit: a script reply nests arrays more than {MAX_REPLY_NESTING} deep"
                ));
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(item) => items.push(lua_to_reply(&item, depth + 1)?),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_arguments() {
        assert_eq!(number_text(1.0), "1");
        assert_eq!(number_text(-0.0), "0");
        assert_eq!(number_text(1e15), "1000000000000000");
        assert_eq!(number_text(0.5), "0.5");
        assert_eq!(number_text(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(number_text(1e30), "1e+30");
        assert_eq!(number_text(1e-7), "1e-07");
    }

    #[test]
    fn shebangs() {
        assert!(shebang(b"return 1").unwrap().is_none());
        let s = shebang(b"#!lua flags=no-writes\nreturn 1").unwrap().unwrap();
        assert!(s.no_writes);
        assert_eq!(s.len, 21);
        assert!(!shebang(b"#!lua\nreturn 1").unwrap().unwrap().no_writes);
        assert_eq!(shebang(b"#!lua").err().unwrap(), "ERR Invalid script shebang");
        assert_eq!(shebang(b"#!python\nx").err().unwrap(), "ERR Could not find scripting engine 'python'");
        assert_eq!(
            shebang(b"#!lua flags=bogus\nx").err().unwrap(),
            "ERR Unexpected flag in script shebang: bogus"
        );
    }
}
