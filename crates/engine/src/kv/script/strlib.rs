//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` for scripts, over the counted
//! matcher of [`super::pattern`] instead of Lua's C one (whose backtracking the instruction budget
//! cannot see).
//!
//! Invariants: each function answers what Lua 5.1's answers for the same arguments (values,
//! captures, error texts; the differential test below runs both on generated patterns), except
//! that a pattern nesting deeper than [`pattern::MAX_DEPTH`] fails with `pattern too complex`;
//! every matcher step, every byte searched plainly and every byte of a `gsub` result is charged to
//! the run's budget as it goes; a `gsub` result is built in Rust, so its size is checked against
//! the run's memory limit before it grows past it.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Function, Lua, LuaString, MultiValue, Value};

use super::lua::{Budget, BYTES_PER_UNIT, MEMORY_LIMIT};
use super::pattern::{self, Capture, MatchState, PatError};

/// Installs the four functions into `string` (the table string methods resolve to). Each
/// answers `true, results...` or `false, message` (an error Lua code must see as a string, as Lua's
/// own raise it); the prelude ([`LIFT`]) turns the second into a Lua error. Budget exhaustion and
/// other failures of the run are raised directly.
pub(super) fn install(lua: &Lua, string: &mlua::Table, budget: &Rc<Budget>) -> mlua::Result<()> {
    let b = budget.clone();
    string.raw_set(
        "find",
        lua.create_function(move |lua, args: MultiValue| lifted(lua, find_aux(lua, &b, args, true)))?,
    )?;
    let b = budget.clone();
    string.raw_set(
        "match",
        lua.create_function(move |lua, args: MultiValue| lifted(lua, find_aux(lua, &b, args, false)))?,
    )?;
    let b = budget.clone();
    string.raw_set(
        "gmatch",
        lua.create_function(move |lua, args: MultiValue| {
            lifted(lua, gmatch(lua, &b, args).map(|f| MultiValue::from_iter([Value::Function(f)])))
        })?,
    )?;
    let b = budget.clone();
    let pcall: Function = lua.globals().raw_get("pcall")?;
    string.raw_set(
        "gsub",
        lua.create_function(move |lua, args: MultiValue| {
            lifted(
                lua,
                gsub(lua, &b, &pcall, args)
                    .map(|(s, n)| MultiValue::from_iter([Value::String(s), Value::Integer(n)])),
            )
        })?,
    )?;
    lua.load(LIFT).set_name("=strlib").call::<()>(string.clone())
}

/// Lua code that raises the `false, message` answers of the functions as Lua errors (a string
/// error value, no position: what Lua's C functions raise), also for `gmatch`'s iterator.
const LIFT: &str = r#"
local string = ...
local error, rawget, rawset = error, rawget, rawset
local function lift(ok, ...) if ok then return ... end error((...), 0) end
for _, name in ipairs({'find', 'match', 'gsub'}) do
    local f = rawget(string, name)
    rawset(string, name, function(...) return lift(f(...)) end)
end
local gmatch = rawget(string, 'gmatch')
rawset(string, 'gmatch', function(...)
    local it = lift(gmatch(...))
    return function() return lift(it()) end
end)
"#;

/// Why a function failed.
enum Fail {
    /// An error Lua code sees as a string (a bad argument, a malformed pattern, an error of a
    /// replacement function).
    Lua(String),
    /// An error value raised by Lua code this function called (a replacement function): raised
    /// again as it is.
    Raised(Value),
    /// A failure of the run (the budget, memory).
    Hard(mlua::Error),
}

impl From<mlua::Error> for Fail {
    fn from(e: mlua::Error) -> Fail {
        match e {
            // mlua appends a traceback to the message of an error raised by Lua code.
            mlua::Error::RuntimeError(mut text) => {
                if let Some(at) = text.find("\nstack traceback:") {
                    text.truncate(at);
                }
                Fail::Lua(text)
            }
            other => Fail::Hard(other),
        }
    }
}

type Answer<T> = Result<T, Fail>;

/// `true, values...`, `false, message`, or the run's failure.
fn lifted(lua: &Lua, r: Answer<MultiValue>) -> mlua::Result<MultiValue> {
    match r {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            Ok(values)
        }
        Err(Fail::Lua(text)) => {
            Ok(MultiValue::from_iter([Value::Boolean(false), Value::String(lua.create_string(&text)?)]))
        }
        Err(Fail::Raised(value)) => Ok(MultiValue::from_iter([Value::Boolean(false), value])),
        Err(Fail::Hard(e)) => Err(e),
    }
}

/// Lua's type name of a value, as its error texts use it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

fn bad_argument(n: usize, name: &str, text: &str) -> Fail {
    Fail::Lua(format!("bad argument #{n} to '{name}' ({text})"))
}

/// Argument `i` (0-based) as a string, numbers converted (`luaL_checklstring`).
fn check_string(lua: &Lua, args: &[Value], i: usize, name: &str) -> Answer<LuaString> {
    let v = args.get(i).cloned().unwrap_or(Value::Nil);
    let got = type_name(&v);
    match v {
        Value::String(s) => Ok(s),
        v @ (Value::Integer(_) | Value::Number(_)) => {
            lua.coerce_string(v)?.ok_or_else(|| bad_argument(i + 1, name, "string expected, got number"))
        }
        _ => Err(bad_argument(i + 1, name, &format!("string expected, got {got}"))),
    }
}

/// Argument `i` (0-based) as an integer, `default` if absent or nil (`luaL_optinteger`).
fn opt_integer(lua: &Lua, args: &[Value], i: usize, name: &str, default: i64) -> Answer<i64> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(default),
        Some(v) => match lua.coerce_number(v.clone())? {
            Some(n) => Ok(n as i64),
            None => Err(bad_argument(i + 1, name, &format!("number expected, got {}", type_name(v)))),
        },
    }
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Nil) | Some(Value::Boolean(false)))
}

/// A matcher error as the script sees it; a budget error marks the budget exhausted.
fn raise(budget: &Budget, e: PatError) -> Fail {
    match e {
        PatError::Lua(text) => Fail::Lua(text.to_owned()),
        PatError::Budget => match budget.charge_steps(u64::MAX) {
            Err(e) => Fail::Hard(e),
            Ok(()) => Fail::Hard(mlua::Error::runtime("pattern step budget exhausted")),
        },
    }
}

/// Charges the steps `ms` took since the last settlement and gives it the rest of the budget.
fn settle(budget: &Budget, ms: &mut MatchState<'_>) -> Answer<()> {
    let steps = ms.take_steps(budget.remaining_steps());
    budget.charge_steps(steps).map_err(Fail::Hard)
}

fn capture_value(lua: &Lua, c: Capture<'_>) -> mlua::Result<Value> {
    Ok(match c {
        Capture::Str(b) => Value::String(lua.create_string(b)?),
        Capture::Position(n) => Value::Integer(n as i64),
    })
}

fn captures(
    lua: &Lua,
    budget: &Budget,
    ms: &MatchState<'_>,
    s: usize,
    e: usize,
    whole: bool,
) -> Answer<MultiValue> {
    let caps = ms.captures(s, e, whole).map_err(|err| raise(budget, err))?;
    caps.into_iter().map(|c| capture_value(lua, c)).collect::<mlua::Result<MultiValue>>().map_err(Fail::Hard)
}

/// A relative string position (`posrelat`): negative counts back from the end.
fn posrelat(pos: i64, len: usize) -> i64 {
    let pos = if pos < 0 { pos.saturating_add(len as i64 + 1) } else { pos };
    pos.max(0)
}

/// `string.find` (`find`) and `string.match` (`str_find_aux`).
fn find_aux(lua: &Lua, budget: &Budget, args: MultiValue, find: bool) -> Answer<MultiValue> {
    let name = if find { "find" } else { "match" };
    let args: Vec<Value> = args.into_iter().collect();
    let s = check_string(lua, &args, 0, name)?;
    let p = check_string(lua, &args, 1, name)?;
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init =
        (posrelat(opt_integer(lua, &args, 2, name, 1)?, src.len()) - 1).clamp(0, src.len() as i64) as usize;
    if find && (truthy(args.get(3)) || !pattern::has_specials(&pat)) {
        budget.charge((src.len() - init) as u64 / BYTES_PER_UNIT).map_err(Fail::Hard)?;
        let found =
            if pat.is_empty() { Some(0) } else { src[init..].windows(pat.len()).position(|w| w == &pat[..]) };
        return match found {
            Some(i) => Ok(MultiValue::from_iter([
                Value::Integer((init + i + 1) as i64),
                Value::Integer((init + i + pat.len()) as i64),
            ])),
            None => Ok(MultiValue::from_iter([Value::Nil])),
        };
    }
    let pat = pattern::effective(&pat);
    let (anchor, pat) = match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    };
    let mut ms = MatchState::new(&src, pat, budget.remaining_steps());
    let mut s1 = init;
    loop {
        let res = ms.match_at(s1);
        settle(budget, &mut ms)?;
        if let Some(e) = res.map_err(|err| raise(budget, err))? {
            if find {
                let mut out =
                    MultiValue::from_iter([Value::Integer(s1 as i64 + 1), Value::Integer(e as i64)]);
                out.extend(captures(lua, budget, &ms, s1, e, false)?);
                return Ok(out);
            }
            return captures(lua, budget, &ms, s1, e, true);
        }
        if s1 >= src.len() || anchor {
            return Ok(MultiValue::from_iter([Value::Nil]));
        }
        s1 += 1;
    }
}

/// `string.gmatch`: an iterator over the matches (Lua 5.1 reads a leading `^` literally here).
fn gmatch(lua: &Lua, budget: &Rc<Budget>, args: MultiValue) -> Answer<Function> {
    let args: Vec<Value> = args.into_iter().collect();
    let s = check_string(lua, &args, 0, "gmatch")?;
    let p = check_string(lua, &args, 1, "gmatch")?;
    let budget = budget.clone();
    let next = Cell::new(0usize);
    let iterate = move |lua: &Lua| -> Answer<MultiValue> {
        let (src, pat) = (s.as_bytes(), p.as_bytes());
        let mut ms = MatchState::new(&src, pattern::effective(&pat), budget.remaining_steps());
        let mut start = next.get();
        while start <= src.len() {
            let res = ms.match_at(start);
            settle(&budget, &mut ms)?;
            if let Some(e) = res.map_err(|err| raise(&budget, err))? {
                next.set(if e == start { e + 1 } else { e });
                return captures(lua, &budget, &ms, start, e, true);
            }
            start += 1;
        }
        Ok(MultiValue::new())
    };
    Ok(lua.create_function(move |lua, ()| lifted(lua, iterate(lua)))?)
}

/// `string.gsub`.
/// `string.gsub`; `pcall` is Lua's own, to call a replacement function and get what it raises
/// unchanged.
fn gsub(lua: &Lua, budget: &Budget, pcall: &Function, args: MultiValue) -> Answer<(LuaString, i64)> {
    let args: Vec<Value> = args.into_iter().collect();
    let s = check_string(lua, &args, 0, "gsub")?;
    let p = check_string(lua, &args, 1, "gsub")?;
    let src = s.as_bytes();
    let pat = p.as_bytes();
    let repl = args.get(2).cloned().unwrap_or(Value::Nil);
    let max_n = opt_integer(lua, &args, 3, "gsub", src.len() as i64 + 1)?;
    let repl = match repl {
        Value::Integer(_) | Value::Number(_) | Value::String(_) => {
            Replacement::Text(lua.coerce_string(repl)?.expect("a number or string converts to a string"))
        }
        Value::Function(f) => Replacement::Function(f, pcall.clone()),
        Value::Table(t) => Replacement::Table(t),
        _ => return Err(bad_argument(3, "gsub", "string/function/table expected")),
    };
    let pat = pattern::effective(&pat);
    let (anchor, pat) = match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    };
    let mut ms = MatchState::new(&src, pat, budget.remaining_steps());
    let mut out = Output { bytes: Vec::new(), charged: 0 };
    let (mut at, mut n) = (0usize, 0i64);
    while n < max_n {
        let res = ms.match_at(at);
        settle(budget, &mut ms)?;
        let e = res.map_err(|err| raise(budget, err))?;
        if let Some(e) = e {
            n += 1;
            repl.add_value(lua, budget, &ms, &mut out, at, e)?;
        }
        match e {
            Some(e) if e > at => at = e,
            _ if at < src.len() => {
                out.push(budget, &src[at..at + 1])?;
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    out.push(budget, &src[at..])?;
    Ok((lua.create_string(&out.bytes)?, n))
}

/// The result of a `gsub` as it grows: bounded by the memory limit, charged by its length.
struct Output {
    bytes: Vec<u8>,
    charged: usize,
}

impl Output {
    fn push(&mut self, budget: &Budget, b: &[u8]) -> Answer<()> {
        if self.bytes.len() + b.len() > MEMORY_LIMIT {
            return Err(Fail::Lua("not enough memory".to_owned()));
        }
        self.bytes.extend_from_slice(b);
        let due = (self.bytes.len() - self.charged) as u64 / BYTES_PER_UNIT;
        if due > 0 {
            self.charged += (due * BYTES_PER_UNIT) as usize;
            budget.charge(due).map_err(Fail::Hard)?;
        }
        Ok(())
    }
}

/// What `gsub` replaces a match with.
enum Replacement {
    /// A string (or number) with `%0`-`%9` and `%%` (`add_s`).
    Text(LuaString),
    /// Called with the captures (through Lua's `pcall`, the second).
    Function(Function, Function),
    /// Indexed with the first capture.
    Table(mlua::Table),
}

impl Replacement {
    /// Lua's `add_value`: appends the replacement of the match `s..e`.
    fn add_value(
        &self,
        lua: &Lua,
        budget: &Budget,
        ms: &MatchState<'_>,
        out: &mut Output,
        s: usize,
        e: usize,
    ) -> Answer<()> {
        let value = match self {
            Replacement::Text(text) => {
                let text = text.as_bytes();
                let mut i = 0;
                while i < text.len() {
                    let c = text[i];
                    if c != b'%' {
                        out.push(budget, &[c])?;
                    } else {
                        i += 1;
                        // Past the end Lua reads the string's terminator: a NUL byte is added.
                        let d = text.get(i).copied().unwrap_or(0);
                        if !d.is_ascii_digit() {
                            out.push(budget, &[d])?;
                        } else if d == b'0' {
                            out.push(budget, ms.subject(s, e))?;
                        } else {
                            match ms
                                .capture_value(usize::from(d - b'1'), s, e)
                                .map_err(|err| raise(budget, err))?
                            {
                                Capture::Str(b) => out.push(budget, b)?,
                                Capture::Position(n) => out.push(budget, n.to_string().as_bytes())?,
                            }
                        }
                    }
                    i += 1;
                }
                return Ok(());
            }
            Replacement::Function(f, pcall) => {
                let mut args = captures(lua, budget, ms, s, e, true)?;
                args.push_front(Value::Function(f.clone()));
                let mut answer = pcall.call::<MultiValue>(args)?.into_iter();
                let ok = matches!(answer.next(), Some(Value::Boolean(true)));
                let first = answer.next().unwrap_or(Value::Nil);
                if !ok {
                    return Err(Fail::Raised(first));
                }
                first
            }
            Replacement::Table(t) => {
                let key = capture_value(lua, ms.capture_value(0, s, e).map_err(|err| raise(budget, err))?)?;
                t.get::<Value>(key)?
            }
        };
        match value {
            Value::Nil | Value::Boolean(false) => out.push(budget, ms.subject(s, e)),
            v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
                let text = lua.coerce_string(v)?.expect("a number or string converts to a string");
                out.push(budget, &text.as_bytes())
            }
            other => Err(Fail::Lua(format!("invalid replacement value (a {})", type_name(&other)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use mlua::{LuaOptions, StdLib};
    use proptest::prelude::*;

    use super::*;

    /// Lua code that runs Lua's own function and ours on the same arguments and shows both
    /// answers (or errors) as text.
    const COMPARE: &str = r#"
local function show(ok, ...)
    local out = {tostring(ok), tostring(select('#', ...))}
    for i = 1, select('#', ...) do
        local v = select(i, ...)
        out[#out + 1] = type(v) .. ':' .. tostring(v)
    end
    return table.concat(out, '|')
end
function both(name, ...)
    return show(pcall(string[name], ...)), show(pcall(ours[name], ...))
end
function both_gmatch(s, p)
    local function collect(gmatch)
        local ok, it = pcall(gmatch, s, p)
        if not ok then return 'error:' .. tostring(it) end
        local out = {}
        for _ = 1, 40 do
            local r = show(pcall(it))
            out[#out + 1] = r
            if r == 'true|0' or r:sub(1, 5) == 'false' then break end
        end
        return table.concat(out, ';')
    end
    return collect(string.gmatch), collect(ours.gmatch)
end
"#;

    fn state() -> (Lua, Rc<Budget>) {
        let lua = Lua::new_with(StdLib::STRING | StdLib::TABLE, LuaOptions::new()).unwrap();
        let budget = Rc::new(Budget::new());
        let ours = lua.create_table().unwrap();
        install(&lua, &ours, &budget).unwrap();
        lua.globals().set("ours", ours).unwrap();
        lua.load(COMPARE).exec().unwrap();
        (lua, budget)
    }

    fn compare(lua: &Lua, name: &str, args: Vec<Value>) -> (String, String) {
        let both: Function = lua.globals().get("both").unwrap();
        let mut call = MultiValue::from_iter([Value::String(lua.create_string(name).unwrap())]);
        call.extend(args);
        both.call(call).unwrap()
    }

    fn bytes(lua: &Lua, b: &[u8]) -> Value {
        Value::String(lua.create_string(b).unwrap())
    }

    fn pattern() -> impl Strategy<Value = Vec<u8>> {
        let tokens = prop::sample::select(vec![
            "a", "b", ".", "%a", "%d", "%s", "%w", "%p", "%z", "%A", "[ab]", "[^a]", "[a-c]", "[%a%-]", "[]",
            "[^]]", "*", "+", "-", "?", "(", ")", "()", "%1", "%2", "%b()", "%bab", "%f[%w]", "%f[%z]", "^",
            "$", "%", "[", "]", "x", "%%", "%(", "\0",
        ]);
        prop::collection::vec(tokens, 0..7).prop_map(|v| v.concat().replace("\\0", "\0").into_bytes())
    }

    fn subject() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"ab(). x1-]\0A".to_vec()), 0..12)
    }

    fn replacement() -> impl Strategy<Value = Vec<u8>> {
        let tokens = prop::sample::select(vec!["x", "%1", "%0", "%2", "%%", "%", "%a", "-"]);
        prop::collection::vec(tokens, 0..4).prop_map(|v| v.concat().into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn find_match_gmatch_and_gsub_answer_as_luas_own(
            s in subject(),
            p in pattern(),
            init in prop::option::of(-14i64..14),
            plain in any::<bool>(),
            repl in replacement(),
            max in prop::option::of(0i64..4),
        ) {
            let (lua, _) = state();
            let init = init.map_or(Value::Nil, Value::Integer);
            let mut find = vec![bytes(&lua, &s), bytes(&lua, &p), init.clone()];
            if plain {
                find.push(Value::Boolean(true));
            }
            let (theirs, ours) = compare(&lua, "find", find);
            prop_assert_eq!(theirs, ours, "find");
            let (theirs, ours) = compare(&lua, "match", vec![bytes(&lua, &s), bytes(&lua, &p), init]);
            prop_assert_eq!(theirs, ours, "match");
            let both: Function = lua.globals().get("both_gmatch").unwrap();
            let (theirs, ours): (String, String) = both.call((bytes(&lua, &s), bytes(&lua, &p))).unwrap();
            prop_assert_eq!(theirs, ours, "gmatch");
            let max = max.map_or(Value::Nil, Value::Integer);
            let (theirs, ours) = compare(&lua, "gsub", vec![bytes(&lua, &s), bytes(&lua, &p), bytes(&lua, &repl), max]);
            prop_assert_eq!(theirs, ours, "gsub");
        }
    }

    #[test]
    fn gsub_with_functions_tables_and_numbers_answers_as_luas_own() {
        let (lua, _) = state();
        lua.load(
            r#"
            local cases = {
                {'hello world', '(%w+)', function(w) return w:upper() end},
                {'hello world', '%w+', function(w) if w == 'hello' then return false end return 7 end},
                {'$name is $age', '%$(%w+)', {name = 'ann', age = 3}},
                {'abc', '()', function(p) return '<' .. p .. '>' end},
                {'abc', '%w', 5},
                {'abc', '%w', '%0%0'},
                {'abc', '(%w)', {}},
                {'abc', 'b', function() return {} end},
                {'abc', 'b', function() error('boom') end},
                {'abc', 'b', function() error('boom', 0) end},
                {'abc', '', '-'},
                {'abc', 'b', true},
            }
            for i, c in ipairs(cases) do
                local theirs, ours = both('gsub', c[1], c[2], c[3])
                -- Called through pcall, Lua's own cannot name itself in a bad-argument text.
                theirs = theirs:gsub("'%?'", "'gsub'")
                if theirs ~= ours then error('case ' .. i .. ': ' .. theirs .. ' vs ' .. ours) end
            end
            local theirs, ours = both('find', 12345, 34)
            assert(theirs == ours, theirs .. ' vs ' .. ours)
            "#,
        )
        .exec()
        .unwrap();
    }

    #[test]
    fn a_pathological_pattern_exhausts_the_budget_instead_of_hanging() {
        let (lua, budget) = state();
        let started = std::time::Instant::now();
        let r = lua.load("return ours.find(string.rep('a', 40), '.-.-.-.-.-.-.-.-b')").eval::<MultiValue>();
        let err = r.expect_err("the budget stops it").to_string();
        assert!(err.contains("instruction budget"), "{err}");
        assert!(budget.remaining_steps() <= 2, "the budget is used up");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
