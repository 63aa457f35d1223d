//! Field expressions: parsed once when a mapping is compiled into a tree whose regexes, time
//! formats and value maps are ready to run, then evaluated per payload.
//!
//! Grammar (lowest precedence first):
//! ```text
//! expr   := or
//! or     := and ("or" and)*
//! and    := not ("and" not)*
//! not    := "not" not | cmp
//! cmp    := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
//! sum    := prod (("+" | "-") prod)*
//! prod   := unary (("*" | "/") unary)*
//! unary  := "-" unary | atom
//! atom   := number | 'string' | "string" | true | false | null | previous | current
//!         | path | name "(" args ")" | "(" expr ")"
//! path   := ("$" | "@") ("." key | "[" index "]" | "[" 'key' "]" | "[*]")*
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value as Node;
use sha1::{Digest, Sha1};

use crate::directory::Directory;

/// A value while an expression is evaluated. Numbers are `f64` (exact for integers below 2^53,
/// which covers epoch milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// Absent: a missing path, an empty string, `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string (never empty: empty strings read as [`Val::Null`]).
    Str(String),
}

impl Val {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// Truthiness for `when`, `if`, `and`, `or`, `not`: null, false, 0, `"0"` and `"false"` are false.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0,
            Val::Str(s) => !(s == "0" || s.eq_ignore_ascii_case("false")),
        }
    }

    /// The number a value stands for: numbers, and strings that parse as numbers (after trimming).
    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            Val::Bool(_) | Val::Null => None,
        }
    }

    /// The text form used by `concat`, `match` keys, `hash` and string outputs.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    /// [`Val::text`] without a copy when the value is already a string.
    pub(crate) fn as_text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.text()),
        }
    }

    pub(crate) fn write_text(&self, out: &mut String) {
        match self {
            Val::Null => {}
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Num(n) => write_number(out, *n),
            Val::Str(s) => out.push_str(s),
        }
    }

    fn from_node(node: &Node) -> Val {
        match node {
            Node::Null | Node::Array(_) | Node::Object(_) => Val::Null,
            Node::Bool(b) => Val::Bool(*b),
            Node::Number(n) => n.as_f64().map_or(Val::Null, Val::Num),
            Node::String(s) if s.is_empty() => Val::Null,
            Node::String(s) => Val::Str(s.clone()),
        }
    }
}

/// Integers without a fraction (below 2^53), everything else in Rust's shortest form.
pub(crate) fn write_number(out: &mut String, n: f64) {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        let _ = write!(out, "{}", n as i64);
    } else {
        let _ = write!(out, "{n}");
    }
}

/// Why an expression could not produce a value.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalError {
    /// What went wrong, naming the function or operator.
    pub problem: String,
    /// The offending value, for `salespulse sources test` (never logged on live traffic).
    pub value: Option<String>,
}

fn fail<T>(problem: impl Into<String>, value: Option<&Val>) -> Result<T, EvalError> {
    Err(EvalError { problem: problem.into(), value: value.map(|v| format!("{v:?}")) })
}

/// Where a path starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Root {
    /// `$`: the whole decoded payload.
    Document,
    /// `@`: the current `each` item (the payload when the rule has no `each`).
    Item,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// `.name` or `['name']`: an object member.
    Key(String),
    /// `[3]`: an array element (or an object member named `"3"`).
    Index(usize),
    /// `[*]`: every element or member value (only in `each`).
    All,
}

/// A compiled path.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Path {
    pub root: Root,
    pub steps: Vec<Step>,
}

impl Path {
    /// Every node the path selects, in document order.
    pub(crate) fn select<'a>(&self, document: &'a Node, item: &'a Node, out: &mut Vec<&'a Node>) {
        let start = match self.root {
            Root::Document => document,
            Root::Item => item,
        };
        select_from(start, &self.steps, out);
    }

    /// The single node a wildcard-free path reaches, if any.
    fn get<'a>(&self, document: &'a Node, item: &'a Node) -> Option<&'a Node> {
        let mut node = match self.root {
            Root::Document => document,
            Root::Item => item,
        };
        for step in &self.steps {
            node = step_one(node, step)?;
        }
        Some(node)
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::All))
    }
}

fn step_one<'a>(node: &'a Node, step: &Step) -> Option<&'a Node> {
    match (node, step) {
        (Node::Object(map), Step::Key(key)) => map.get(key),
        (Node::Array(items), Step::Index(i)) => items.get(*i),
        (Node::Object(map), Step::Index(i)) => map.get(&i.to_string()),
        _ => None,
    }
}

fn select_from<'a>(node: &'a Node, steps: &[Step], out: &mut Vec<&'a Node>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(node);
        return;
    };
    match (node, step) {
        (Node::Array(items), Step::All) => items.iter().for_each(|n| select_from(n, rest, out)),
        (Node::Object(map), Step::All) => map.values().for_each(|n| select_from(n, rest, out)),
        (_, Step::All) => {}
        (node, step) => {
            if let Some(next) = step_one(node, step) {
                select_from(next, rest, out);
            }
        }
    }
}

/// A time format of `time(x, "format")`.
#[derive(Clone, Debug)]
pub(crate) enum TimeFormat {
    UnixSeconds,
    UnixMillis,
    UnixMicros,
    Rfc3339,
    Rfc2822,
    /// A strptime pattern, parsed once into chrono's items; `with_offset` when it contains
    /// `%z`, else read in the source's zone.
    Pattern {
        items: Vec<chrono::format::Item<'static>>,
        with_offset: bool,
    },
}

impl TimeFormat {
    fn parse(spec: &str) -> Result<TimeFormat, String> {
        Ok(match spec {
            "unix_s" | "unix" => TimeFormat::UnixSeconds,
            "unix_ms" => TimeFormat::UnixMillis,
            "unix_us" => TimeFormat::UnixMicros,
            "rfc3339" => TimeFormat::Rfc3339,
            "rfc2822" => TimeFormat::Rfc2822,
            pattern if pattern.contains('%') => {
                let with_offset = pattern.contains("%z") || pattern.contains("%:z");
                // Parsed once with chrono's own parser of format strings (which also checks it).
                let items = chrono::format::StrftimeItems::new(pattern)
                    .parse_to_owned()
                    .map_err(|_| format!("invalid strptime pattern {pattern:?}"))?;
                TimeFormat::Pattern { items, with_offset }
            }
            other => {
                return Err(format!(
                    "unknown time format {other:?} (unix_s, unix_ms, unix_us, rfc3339, rfc2822 or a strptime pattern)"
                ))
            }
        })
    }

    /// Epoch milliseconds UTC.
    fn apply(&self, value: &Val, zone: Tz) -> Result<Val, EvalError> {
        let scale = match self {
            TimeFormat::UnixSeconds => Some(1000.0),
            TimeFormat::UnixMillis => Some(1.0),
            TimeFormat::UnixMicros => Some(0.001),
            _ => None,
        };
        if let Some(scale) = scale {
            return match value.number() {
                Some(n) => Ok(Val::Num((n * scale).round())),
                None => fail("time: not a unix timestamp", Some(value)),
            };
        }
        let Val::Str(text) = value else {
            return fail("time: expected a string", Some(value));
        };
        let text = text.trim();
        let ms = match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis()),
            TimeFormat::Rfc2822 => DateTime::parse_from_rfc2822(text).ok().map(|t| t.timestamp_millis()),
            // What `DateTime::parse_from_str` and `NaiveDateTime::parse_from_str` do, without
            // parsing the pattern again.
            TimeFormat::Pattern { items, with_offset: true } => {
                parse_items(text, items).and_then(|p| p.to_datetime().ok()).map(|t| t.timestamp_millis())
            }
            TimeFormat::Pattern { items, with_offset: false } => parse_items(text, items)
                .and_then(|p| p.to_naive_datetime_with_offset(0).ok())
                // An ambiguous local time (the hour repeated when clocks go back) takes the
                // earlier instant; a skipped one (clocks go forward) does not exist and fails.
                .and_then(|naive| zone.from_local_datetime(&naive).earliest())
                .map(|t| t.timestamp_millis()),
            _ => None,
        };
        match ms {
            Some(ms) => Ok(Val::Num(ms as f64)),
            None => fail("time: does not match the format", Some(value)),
        }
    }
}

fn parse_items(text: &str, items: &[chrono::format::Item<'static>]) -> Option<chrono::format::Parsed> {
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
    Some(parsed)
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const(Val),
    Path(Path),
    Previous,
    Current,
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    Coalesce(Vec<Expr>),
    Concat(Vec<Expr>),
    If(Box<[Expr; 3]>),
    In(Box<Expr>, Vec<Expr>),
    Num(Box<Expr>),
    Str(Box<Expr>),
    Lower(Box<Expr>),
    Len(Box<Expr>),
    Hash(Vec<Expr>),
    Time(Box<Expr>, TimeFormat),
    Regex(Box<Expr>, regex::Regex),
    Match {
        value: Box<Expr>,
        cases: Vec<(String, Expr)>,
        default: Option<Box<Expr>>,
    },
    Manager(Box<Expr>),
    Team(Box<Expr>),
    /// A sub-expression that occurs more than once in a rule: evaluated at most once per item,
    /// its value kept in slot `.0` of the scope's cache (see [`share_common`]).
    Shared(usize, Box<Expr>),
}

/// What an expression can see.
pub(crate) struct Scope<'a> {
    pub document: &'a Node,
    pub item: &'a Node,
    pub previous: &'a Val,
    pub current: &'a Val,
    pub zone: Tz,
    pub source: &'a str,
    pub directory: &'a Directory,
    /// The values of the rule's [`Expr::Shared`] sub-expressions for the current item (`None`
    /// until first evaluated); as many slots as [`share_common`] returned.
    pub cache: &'a RefCell<Vec<Option<Val>>>,
}

impl Expr {
    pub(crate) fn eval(&self, scope: &Scope<'_>) -> Result<Val, EvalError> {
        Ok(match self {
            Expr::Const(v) => v.clone(),
            Expr::Path(path) => path.get(scope.document, scope.item).map_or(Val::Null, Val::from_node),
            Expr::Previous => scope.previous.clone(),
            Expr::Current => scope.current.clone(),
            Expr::Not(e) => Val::Bool(!e.eval(scope)?.truthy()),
            Expr::Neg(e) => {
                let v = e.eval(scope)?;
                match v {
                    Val::Null => Val::Null,
                    v => Val::Num(-numeric("-", &v)?),
                }
            }
            Expr::Bin(Op::And, a, b) => Val::Bool(a.eval(scope)?.truthy() && b.eval(scope)?.truthy()),
            Expr::Bin(Op::Or, a, b) => Val::Bool(a.eval(scope)?.truthy() || b.eval(scope)?.truthy()),
            Expr::Bin(op, a, b) => binary(*op, a.eval(scope)?, b.eval(scope)?)?,
            Expr::Coalesce(items) => {
                for e in items {
                    let v = e.eval(scope)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Val::Null
            }
            Expr::Concat(items) => {
                let mut out = String::new();
                for e in items {
                    let v = e.eval(scope)?;
                    if v.is_null() {
                        return Ok(Val::Null);
                    }
                    v.write_text(&mut out);
                }
                Val::Str(out)
            }
            Expr::If(parts) => {
                let [c, a, b] = &**parts;
                if c.eval(scope)?.truthy() {
                    a.eval(scope)?
                } else {
                    b.eval(scope)?
                }
            }
            Expr::In(value, options) => {
                let v = value.eval(scope)?;
                for o in options {
                    if equal(&v, &o.eval(scope)?) {
                        return Ok(Val::Bool(true));
                    }
                }
                Val::Bool(false)
            }
            Expr::Num(e) => match e.eval(scope)? {
                Val::Null => Val::Null,
                v => Val::Num(numeric("num", &v)?),
            },
            Expr::Str(e) => match e.eval(scope)? {
                Val::Null => Val::Null,
                v => Val::Str(v.text()),
            },
            Expr::Lower(e) => match e.eval(scope)? {
                Val::Null => Val::Null,
                v => Val::Str(v.text().to_lowercase()),
            },
            Expr::Len(e) => match e.eval(scope)? {
                Val::Null => Val::Num(0.0),
                v => Val::Num(v.as_text().chars().count() as f64),
            },
            Expr::Hash(items) => {
                let mut hasher = Sha1::new();
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        hasher.update([0u8]);
                    }
                    hasher.update(e.eval(scope)?.as_text().as_bytes());
                }
                let digest = hasher.finalize();
                let mut out = String::with_capacity(32);
                for b in &digest[..16] {
                    let _ = write!(out, "{b:02x}");
                }
                Val::Str(out)
            }
            Expr::Time(e, format) => match e.eval(scope)? {
                Val::Null => Val::Null,
                v => format.apply(&v, scope.zone)?,
            },
            Expr::Regex(e, re) => match e.eval(scope)? {
                Val::Null => Val::Null,
                v => {
                    let text = v.as_text();
                    match re.captures(&text) {
                        Some(caps) => {
                            let m = caps.get(1).or_else(|| caps.get(0)).map_or("", |m| m.as_str());
                            if m.is_empty() {
                                Val::Null
                            } else {
                                Val::Str(m.to_owned())
                            }
                        }
                        None => Val::Null,
                    }
                }
            },
            Expr::Match { value, cases, default } => {
                let v = value.eval(scope)?;
                let key = v.as_text();
                match cases.iter().find(|(k, _)| *k == key) {
                    Some((_, e)) => e.eval(scope)?,
                    None => match default {
                        Some(e) => e.eval(scope)?,
                        None => return fail("match: no case for this value and no `_ =>` default", Some(&v)),
                    },
                }
            }
            Expr::Manager(e) => {
                let key = e.eval(scope)?;
                Val::Str(scope.directory.manager(scope.source, &key.as_text()).to_owned())
            }
            Expr::Team(e) => {
                let key = e.eval(scope)?;
                scope.directory.team(scope.source, &key.as_text()).map_or(Val::Null, |t| Val::Str(t.to_owned()))
            }
            Expr::Shared(slot, e) => {
                if let Some(Some(value)) = scope.cache.borrow().get(*slot) {
                    return Ok(value.clone());
                }
                // An error is not kept: evaluating again gives the same error.
                let value = e.eval(scope)?;
                if let Some(cached) = scope.cache.borrow_mut().get_mut(*slot) {
                    *cached = Some(value.clone());
                }
                value
            }
        })
    }

    /// Calls `f` on each direct sub-expression.
    fn for_each_child(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Const(_) | Expr::Path(_) | Expr::Previous | Expr::Current => {}
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::Num(e)
            | Expr::Str(e)
            | Expr::Lower(e)
            | Expr::Len(e)
            | Expr::Time(e, _)
            | Expr::Regex(e, _)
            | Expr::Manager(e)
            | Expr::Team(e)
            | Expr::Shared(_, e) => f(e),
            Expr::Bin(_, a, b) => {
                f(a);
                f(b);
            }
            Expr::Coalesce(items) | Expr::Concat(items) | Expr::Hash(items) => items.iter_mut().for_each(f),
            Expr::If(parts) => parts.iter_mut().for_each(f),
            Expr::In(value, items) => {
                f(value);
                items.iter_mut().for_each(f);
            }
            Expr::Match { value, cases, default } => {
                f(value);
                cases.iter_mut().for_each(|(_, e)| f(e));
                if let Some(d) = default {
                    f(d);
                }
            }
        }
    }

    /// Whether evaluating this node costs more than reading a value (so sharing it pays).
    fn worth_sharing(&self) -> bool {
        !matches!(self, Expr::Const(_) | Expr::Path(_) | Expr::Previous | Expr::Current | Expr::Shared(..))
    }

    /// Whether the expression reads `previous` or `current` anywhere (at compile time only:
    /// it walks a copy).
    pub(crate) fn uses_memory(&self) -> bool {
        if matches!(self, Expr::Previous | Expr::Current) {
            return true;
        }
        let mut uses = false;
        self.clone().for_each_child(&mut |child| uses |= child.uses_memory());
        uses
    }
}

/// Common sub-expression sharing: every sub-expression that occurs more than once across
/// `exprs` (a rule's `remember`, `when` and field expressions; compared by structure, regex
/// patterns and time formats included) is wrapped in [`Expr::Shared`], so it is evaluated once
/// per item however often the rule uses it (the Twilio mapping's `client:` regex and its
/// `time(.., 'rfc2822')` each appear four times). Returns the number of cache slots. Evaluation
/// stays lazy, so a shared expression in a branch not taken is still never evaluated.
pub(crate) fn share_common(exprs: &mut [&mut Expr]) -> usize {
    fn count(expr: &mut Expr, counts: &mut HashMap<String, usize>) {
        if expr.worth_sharing() {
            *counts.entry(format!("{expr:?}")).or_default() += 1;
        }
        expr.for_each_child(&mut |child| count(child, counts));
    }
    fn wrap(expr: &mut Expr, counts: &HashMap<String, usize>, slots: &mut HashMap<String, usize>) {
        // Children first: their keys are taken before this node is wrapped.
        expr.for_each_child(&mut |child| wrap(child, counts, slots));
        if !expr.worth_sharing() {
            return;
        }
        // The key of the original (unwrapped children) form, as counted.
        let key = format!("{:?}", unshared(expr));
        if counts.get(&key).copied().unwrap_or(0) < 2 {
            return;
        }
        let next = slots.len();
        let slot = *slots.entry(key).or_insert(next);
        let inner = std::mem::replace(expr, Expr::Const(Val::Null));
        *expr = Expr::Shared(slot, Box::new(inner));
    }
    let mut counts = HashMap::new();
    for expr in exprs.iter_mut() {
        count(expr, &mut counts);
    }
    let mut slots = HashMap::new();
    for expr in exprs.iter_mut() {
        wrap(expr, &counts, &mut slots);
    }
    slots.len()
}

/// `expr` with every [`Expr::Shared`] wrapper removed (the form sub-expressions are compared in).
fn unshared(expr: &Expr) -> Expr {
    let mut copy = expr.clone();
    fn strip(expr: &mut Expr) {
        if let Expr::Shared(_, inner) = expr {
            *expr = std::mem::replace(&mut **inner, Expr::Const(Val::Null));
            strip(expr);
            return;
        }
        expr.for_each_child(&mut strip);
    }
    strip(&mut copy);
    copy
}

fn numeric(what: &str, v: &Val) -> Result<f64, EvalError> {
    match v.number() {
        Some(n) => Ok(n),
        None => fail(format!("{what}: not a number"), Some(v)),
    }
}

/// `==` across types: null equals only null; numbers compare numerically when both sides read as
/// numbers; everything else compares by its text.
pub(crate) fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        (Val::Num(_), _) | (_, Val::Num(_)) => match (a.number(), b.number()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_text() == b.as_text(),
        },
        _ => a.as_text() == b.as_text(),
    }
}

fn binary(op: Op, a: Val, b: Val) -> Result<Val, EvalError> {
    let sign = match op {
        Op::Eq => return Ok(Val::Bool(equal(&a, &b))),
        Op::Ne => return Ok(Val::Bool(!equal(&a, &b))),
        Op::Add => "+",
        Op::Sub => "-",
        Op::Mul => "*",
        Op::Div => "/",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::And | Op::Or => unreachable!("short-circuited by the caller"),
    };
    // Arithmetic and ordering on an absent value give absent (and false): optional inputs
    // (an unanswered call's answer time) flow through without special cases.
    if a.is_null() || b.is_null() {
        return Ok(match op {
            Op::Lt | Op::Le | Op::Gt | Op::Ge => Val::Bool(false),
            _ => Val::Null,
        });
    }
    let x = numeric(sign, &a)?;
    let y = numeric(sign, &b)?;
    Ok(match op {
        Op::Add => Val::Num(x + y),
        Op::Sub => Val::Num(x - y),
        Op::Mul => Val::Num(x * y),
        Op::Div if y == 0.0 => return fail("/: division by zero", Some(&a)),
        Op::Div => Val::Num(x / y),
        Op::Lt => Val::Bool(x < y),
        Op::Le => Val::Bool(x <= y),
        Op::Gt => Val::Bool(x > y),
        _ => Val::Bool(x >= y),
    })
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Num(f64),
    Str(String),
    Ident(String),
    Path(Path),
    Sym(&'static str),
}

const SYMBOLS: [&str; 15] = ["=>", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", ",", "!"];

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, next) = string_literal(text, i)?;
            tokens.push(Token::Str(s));
            i = next;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let n: f64 = text[start..i].parse().map_err(|_| format!("bad number {:?}", &text[start..i]))?;
            tokens.push(Token::Num(n));
            continue;
        }
        if c == b'$' || c == b'@' {
            let (path, next) = path(text, i)?;
            tokens.push(Token::Path(path));
            i = next;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token::Ident(text[start..i].to_owned()));
            continue;
        }
        match SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            Some(sym) => {
                tokens.push(Token::Sym(sym));
                i += sym.len();
            }
            None => return Err(format!("unexpected character {:?} at {i}", &text[i..].chars().next().unwrap_or(' '))),
        }
    }
    Ok(tokens)
}

/// A quoted string starting at `start` (either quote); only `\\`, `\'` and `\"` are escapes.
fn string_literal(text: &str, start: usize) -> Result<(String, usize), String> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            // Only quotes and the backslash itself are escapes: a regex's `\d` stays as written.
            '\\' => match chars.next() {
                Some((_, escaped @ ('\\' | '\'' | '"'))) => out.push(escaped),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c if c == quote => return Ok((out, start + 1 + offset + 1)),
            c => out.push(c),
        }
    }
    Err(format!("unterminated string starting at {start}"))
}

fn path(text: &str, start: usize) -> Result<(Path, usize), String> {
    let bytes = text.as_bytes();
    let root = if bytes[start] == b'$' { Root::Document } else { Root::Item };
    let mut steps = Vec::new();
    let mut i = start + 1;
    let key_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    loop {
        match bytes.get(i) {
            Some(b'.') => {
                let from = i + 1;
                i = from;
                while i < bytes.len() && key_char(bytes[i]) {
                    i += 1;
                }
                if i == from {
                    return Err(format!("empty key after '.' at {from}"));
                }
                steps.push(Step::Key(text[from..i].to_owned()));
            }
            Some(b'[') => {
                let inner = i + 1;
                match bytes.get(inner) {
                    Some(b'*') if bytes.get(inner + 1) == Some(&b']') => {
                        steps.push(Step::All);
                        i = inner + 2;
                    }
                    Some(b'\'' | b'"') => {
                        let (key, next) = string_literal(text, inner)?;
                        if bytes.get(next) != Some(&b']') {
                            return Err(format!("expected ']' at {next}"));
                        }
                        steps.push(Step::Key(key));
                        i = next + 1;
                    }
                    _ => {
                        let close = text[inner..].find(']').map(|o| inner + o).ok_or("unclosed '['")?;
                        let index = text[inner..close]
                            .trim()
                            .parse::<usize>()
                            .map_err(|_| format!("bad index {:?}", &text[inner..close]))?;
                        steps.push(Step::Index(index));
                        i = close + 1;
                    }
                }
            }
            _ => break,
        }
    }
    Ok((Path { root, steps }, i))
}

/// Compiles an expression's text.
pub(crate) fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!("unexpected {:?} after the expression", parser.tokens[parser.at]));
    }
    Ok(expr)
}

/// Compiles a path with wildcards (for `each`).
pub(crate) fn parse_each(text: &str) -> Result<Path, String> {
    let trimmed = text.trim();
    if !(trimmed.starts_with('$') || trimmed.starts_with('@')) {
        return Err("`each` must be a path starting with `$`".into());
    }
    let (path, end) = path(trimmed, 0)?;
    if end != trimmed.len() {
        return Err(format!("unexpected {:?} after the path", &trimmed[end..]));
    }
    Ok(path)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(format!("expected '{sym}', found {:?}", self.peek()))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Bin(Op::Or, Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            left = Expr::Bin(Op::And, Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_word("not") || self.eat_sym("!") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.sum()?;
        for (sym, op) in [("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
        {
            if self.eat_sym(sym) {
                return Ok(Expr::Bin(op, Box::new(left), Box::new(self.sum()?)));
            }
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_sym("+") {
                Op::Add
            } else if self.eat_sym("-") {
                Op::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Bin(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                Op::Mul
            } else if self.eat_sym("/") {
                Op::Div
            } else {
                return Ok(left);
            };
            left = Expr::Bin(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_sym("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned().ok_or("unexpected end of the expression")?;
        self.at += 1;
        match token {
            Token::Num(n) => Ok(Expr::Const(Val::Num(n))),
            Token::Str(s) if s.is_empty() => Ok(Expr::Const(Val::Null)),
            Token::Str(s) => Ok(Expr::Const(Val::Str(s))),
            Token::Path(p) if p.has_wildcard() => Err("`[*]` is only allowed in `each`".into()),
            Token::Path(p) => Ok(Expr::Path(p)),
            Token::Sym("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Token::Sym(s) => Err(format!("unexpected '{s}'")),
            Token::Ident(word) => match word.as_str() {
                "true" => Ok(Expr::Const(Val::Bool(true))),
                "false" => Ok(Expr::Const(Val::Bool(false))),
                "null" => Ok(Expr::Const(Val::Null)),
                "previous" => Ok(Expr::Previous),
                "current" => Ok(Expr::Current),
                _ => {
                    self.expect("(")?;
                    self.call(&word)
                }
            },
        }
    }

    /// Arguments up to the closing parenthesis (the opening one is consumed).
    fn args(&mut self) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.or()?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        if name == "match" {
            return self.match_call();
        }
        let mut args = self.args()?;
        let arity = |n: usize, args: &Vec<Expr>| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{name}() takes {n} argument(s), got {}", args.len()))
            }
        };
        let one = |mut args: Vec<Expr>| Box::new(args.remove(0));
        Ok(match name {
            "coalesce" | "concat" | "hash" if args.is_empty() => return Err(format!("{name}() needs arguments")),
            "coalesce" => Expr::Coalesce(args),
            "concat" => Expr::Concat(args),
            "hash" => Expr::Hash(args),
            "if" => {
                arity(3, &args)?;
                let c = args.remove(0);
                let a = args.remove(0);
                Expr::If(Box::new([c, a, args.remove(0)]))
            }
            "in" if args.len() < 2 => return Err("in() needs a value and at least one option".into()),
            "in" => {
                let value = args.remove(0);
                Expr::In(Box::new(value), args)
            }
            "num" | "str" | "lower" | "len" | "manager" | "team" => {
                arity(1, &args)?;
                let e = one(args);
                match name {
                    "num" => Expr::Num(e),
                    "str" => Expr::Str(e),
                    "lower" => Expr::Lower(e),
                    "len" => Expr::Len(e),
                    "manager" => Expr::Manager(e),
                    _ => Expr::Team(e),
                }
            }
            "time" | "regex" => {
                arity(2, &args)?;
                let Expr::Const(Val::Str(spec)) = args.remove(1) else {
                    return Err(format!("{name}(): the second argument must be a string literal"));
                };
                let e = one(args);
                if name == "time" {
                    Expr::Time(e, TimeFormat::parse(&spec)?)
                } else {
                    let re = regex::Regex::new(&spec).map_err(|err| format!("regex(): {err}"))?;
                    Expr::Regex(e, re)
                }
            }
            other => return Err(format!("unknown function {other}()")),
        })
    }

    /// `match(value, "key" => expr, ..., _ => default)`; keys are literals.
    fn match_call(&mut self) -> Result<Expr, String> {
        let value = self.or()?;
        let mut cases = Vec::new();
        let mut default = None;
        while self.eat_sym(",") {
            let key = match self.peek().cloned() {
                Some(Token::Ident(w)) if w == "_" => None,
                Some(Token::Str(s)) => Some(s),
                Some(Token::Num(n)) => Some(Val::Num(n).text()),
                Some(Token::Ident(w)) if w == "true" || w == "false" => Some(w),
                other => return Err(format!("match(): expected a literal key or `_`, found {other:?}")),
            };
            self.at += 1;
            self.expect("=>")?;
            let result = self.or()?;
            match key {
                Some(key) => cases.push((key, result)),
                None => default = Some(Box::new(result)),
            }
        }
        self.expect(")")?;
        if cases.is_empty() {
            return Err("match() needs at least one `\"key\" => value` case".into());
        }
        Ok(Expr::Match { value: Box::new(value), cases, default })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_with(text: &str, document: &Node, zone: Tz) -> Result<Val, String> {
        let directory = Directory::parse("twilio,ivanov,m-ivanov,north\n").unwrap();
        let expr = parse(text)?;
        let scope = Scope {
            document,
            item: document,
            previous: &Val::Str("10".into()),
            current: &Val::Num(12.0),
            zone,
            source: "twilio",
            directory: &directory,
            cache: &RefCell::new(Vec::new()),
        };
        expr.eval(&scope).map_err(|e| e.problem)
    }

    fn check(text: &str, expected: Val) {
        let document = json!({"a": {"b": "7", "list": [1, {"x": "y"}]}, "n": 2.5, "empty": "", "t": true,
            "chan": "PJSIP/101-0000002b", "k": {"3": "three"}});
        assert_eq!(eval_with(text, &document, Tz::UTC), Ok(expected), "{text}");
    }

    fn str(s: &str) -> Val {
        Val::Str(s.into())
    }

    #[test]
    fn expressions() {
        check("$.a.b", str("7"));
        check("$.a.b + 1", Val::Num(8.0));
        check("$['a'][\"b\"] * 2 - $.n", Val::Num(11.5));
        check("$.a.list[1].x", str("y"));
        check("$.k[3]", str("three"));
        check("$.missing", Val::Null);
        check("$.empty", Val::Null);
        check("$.a", Val::Null);
        check("coalesce($.empty, $.missing, 'z')", str("z"));
        check("concat('a:', $.a.b, ':', $.t)", str("a:7:true"));
        check("concat('a:', $.missing)", Val::Null);
        check("if($.t, 'yes', 'no')", str("yes"));
        check("if(not $.t, 'yes', 'no')", str("no"));
        check("in($.a.b, 1, 7)", Val::Bool(true));
        check("in($.a.b, 'x', 'y')", Val::Bool(false));
        check("$.a.b == 7 and $.n > 2", Val::Bool(true));
        check("$.a.b != '7' or $.n < 2", Val::Bool(false));
        check("$.missing == null", Val::Bool(true));
        check("$.missing + 1", Val::Null);
        check("-$.n", Val::Num(-2.5));
        check("(1 + 2) * 3", Val::Num(9.0));
        check("1 + 2 * 3", Val::Num(7.0));
        check("match($.a.b, '1' => 'one', 7 => 'seven')", str("seven"));
        check("match($.t, true => 'out', false => 'in')", str("out"));
        check("match($.a.b, '1' => 'one', _ => null)", Val::Null);
        check("regex($.chan, '^[A-Z]+/(\\d+)-')", str("101"));
        check("regex($.chan, 'IAX')", Val::Null);
        check(r"regex($.chan, '/(\d+)-')", str("101"));
        check(r"concat('it\'s', ' a \\ b')", str("it's a \\ b"));
        check("lower('WhatsApp')", str("whatsapp"));
        check("len('Привет')", Val::Num(6.0));
        check("num('42')", Val::Num(42.0));
        check("str(42)", str("42"));
        check("previous", str("10"));
        check("current != previous", Val::Bool(true));
        check("manager('ivanov')", str("m-ivanov"));
        check("team('ivanov')", str("north"));
        check("manager('petrov')", str("unattributed"));
        check("team('petrov')", Val::Null);
        check("hash('a', 'b')", str("4a3dec2d1f8245280855c42db0ee4239"));
        check("time('1725963385', 'unix_s')", Val::Num(1_725_963_385_000.0));
        check("time(1725963385123, 'unix_ms')", Val::Num(1_725_963_385_123.0));
        check("time(1725963385123456, 'unix_us')", Val::Num(1_725_963_385_123.0));
        check("time('2024-09-10T13:14:50+03:00', 'rfc3339')", Val::Num(1_725_963_290_000.0));
        check("time('Tue, 10 Sep 2024 10:15:02 +0000', 'rfc2822')", Val::Num(1_725_963_302_000.0));
        check("time('2024-09-10 13:14:50 +0300', '%Y-%m-%d %H:%M:%S %z')", Val::Num(1_725_963_290_000.0));
        check("time('2024-09-10 10:14:50', '%Y-%m-%d %H:%M:%S')", Val::Num(1_725_963_290_000.0));
    }

    #[test]
    fn shared_sub_expressions_are_evaluated_once_and_give_the_same_values() {
        let texts = [
            "if(regex($.chan, '/(\\d+)-') != null, 'internal', 'external')",
            "concat(regex($.chan, '/(\\d+)-'), '@', time('1725963385', 'unix_s'))",
            "time('1725963385', 'unix_s') + 1000",
            "coalesce($.missing, regex($.chan, 'IAX'), 'none')",
        ];
        let document = json!({"chan": "PJSIP/101-0000002b"});
        let directory = Directory::default();
        let mut shared: Vec<Expr> = texts.iter().map(|t| parse(t).unwrap()).collect();
        let slots = share_common(&mut shared.iter_mut().collect::<Vec<_>>());
        // `regex($.chan, '/(\d+)-')` and `time('1725963385', 'unix_s')`; the IAX regex is used once.
        assert_eq!(slots, 2);
        let cache = RefCell::new(vec![None; slots]);
        let scope = Scope {
            document: &document,
            item: &document,
            previous: &Val::Null,
            current: &Val::Null,
            zone: Tz::UTC,
            source: "t",
            directory: &directory,
            cache: &cache,
        };
        for (text, expr) in texts.iter().zip(&shared) {
            assert_eq!(expr.eval(&scope).ok(), eval_with(text, &document, Tz::UTC).ok(), "{text}");
        }
        assert_eq!(cache.borrow().as_slice(), [Some(Val::Str("101".into())), Some(Val::Num(1_725_963_385_000.0))]);
    }

    #[test]
    fn strptime_reads_the_source_time_zone() {
        let document = json!({"at": "2024-09-10 13:14:50", "winter": "2024-01-10 13:14:50"});
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = |text: &str, zone| eval_with(text, &document, zone);
        assert_eq!(t("time($.at, '%Y-%m-%d %H:%M:%S')", moscow), Ok(Val::Num(1_725_963_290_000.0)));
        // Berlin is UTC+2 in September and UTC+1 in January.
        assert_eq!(t("time($.at, '%Y-%m-%d %H:%M:%S')", berlin), Ok(Val::Num(1_725_966_890_000.0)));
        assert_eq!(t("time($.winter, '%Y-%m-%d %H:%M:%S')", berlin), Ok(Val::Num(1_704_888_890_000.0)));
    }

    #[test]
    fn evaluation_errors_name_the_problem() {
        let document = json!({"s": "abc", "z": 0});
        let e = |text: &str| eval_with(text, &document, Tz::UTC).unwrap_err();
        assert_eq!(e("$.s + 1"), "+: not a number");
        assert_eq!(e("1 / $.z"), "/: division by zero");
        assert_eq!(e("time($.s, 'unix_s')"), "time: not a unix timestamp");
        assert_eq!(e("time($.s, 'rfc3339')"), "time: does not match the format");
        assert!(e("match($.s, 'x' => 1)").starts_with("match: no case"));
    }

    #[test]
    fn parse_errors() {
        for (text, needle) in [
            ("$.a +", "unexpected end"),
            ("foo(1)", "unknown function foo()"),
            ("time($.a, 'nonsense')", "unknown time format"),
            ("time($.a, '%Q')", "invalid strptime"),
            ("regex($.a, '(')", "regex()"),
            ("if(1, 2)", "takes 3"),
            ("$.a[*]", "only allowed in `each`"),
            ("'open", "unterminated"),
            ("match($.a)", "at least one"),
            ("match($.a, $.b => 1)", "literal key"),
            ("1 2", "after the expression"),
            ("$.a[x]", "bad index"),
            ("#", "unexpected character"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
