//! Declarative source mappings: connect a PBX, a messenger gateway or a CRM that does not speak
//! the salespulse event contract by writing a TOML file, not code.
//!
//! A mapping file names a body [`Decoder`] (JSON, flat or bracketed form encoding, a form field
//! holding JSON, Asterisk AMI blocks) and a list of rules. Each rule fans the decoded document out
//! with `each` (a path with `[*]` wildcards), filters with `when`, and builds one canonical event
//! of a fixed kind from field expressions (paths, constants, `match` value maps, `coalesce`,
//! arithmetic, `time(..)` parsers with the source's time zone, `regex(..)` captures,
//! `manager(..)` through the [`Directory`], `hash(..)` for event ids). Rules that see only a
//! new value (a task's due date) can `remember` the previous one per entity. Every event is
//! validated by `salespulse-events` exactly as if a producer had sent it as JSON.
//!
//! Main types:
//! - [`Source`] — one compiled mapping file; [`Source::map`] turns a payload into events.
//! - [`Sources`] — every mapping of a directory, with the shared [`Directory`] and metrics.
//! - [`MappingError`] — which rule, which field, which expression, what was wrong.
//! - [`Auth`] — how the webhook gateway checks a source's requests ([`twilio_signature`]).
//!
//! Compilation happens once at start-up: expressions become trees with their regexes and time
//! formats prepared, so nothing is parsed per event. The language is described in
//! `docs/sources/README.md`.
//!
//! ```
//! use salespulse_sources::{Directory, Source};
//! use std::sync::Arc;
//! let mapping = r#"
//!     source = "pings"
//!     decoder = "json"
//!     [[rules]]
//!     name = "message"
//!     kind = "message"
//!     when = "$.text != null"
//!     fields.event_id = "$.id"
//!     fields.occurred_at = "time($.at, 'unix_s')"
//!     fields.manager_id = "'m-1'"
//!     fields.message_id = "$.id"
//!     fields.dialog_id = "$.chat"
//!     fields.channel = "'telegram'"
//!     fields.direction = "'inbound'"
//! "#;
//! let source = Source::compile(mapping, Arc::new(Directory::default())).unwrap();
//! let mapped = source.map(br#"{"id":"x1","at":1714557590,"chat":"c9","text":"hi"}"#);
//! assert_eq!(mapped.events.len(), 1);
//! assert_eq!(mapped.events[0].occurred_at_ms, 1_714_557_590_000);
//! assert!(source.map(br#"{"id":"x2","at":1714557590,"chat":"c9"}"#).events.is_empty());
//! ```
#![deny(missing_docs)]

mod auth;
mod decode;
mod directory;
mod expr;
mod memory;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value as Node;

pub use auth::{twilio_signature, verify_token, Auth, TokenLocation};
pub use decode::{Decoder, MAX_BODY_BYTES, MAX_BRACKET_DEPTH, MAX_BRACKET_INDEX};
pub use directory::{Directory, UNATTRIBUTED};
use expr::{Expr, Scope, Val};
use memory::Memory;
pub use memory::{Position, SnapshotError, HISTORY};
use salespulse_events::{Event, EventFields, FieldValue, Kind};

/// The `rule` label of errors that happen before any rule runs (the body did not decode).
pub const DECODE_RULE: &str = "decode";

/// Remembered values kept per source unless the file says otherwise (`remember_capacity`).
pub const DEFAULT_REMEMBER_CAPACITY: usize = 100_000;

/// A mapping file that cannot be compiled; the message names the file's part that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {detail}")]
pub struct CompileError {
    /// The file (or `<inline>`).
    pub origin: String,
    /// What is wrong, naming the rule and field.
    pub detail: String,
}

/// Why (part of) a payload did not map.
///
/// `Display` names the source, rule, field and expression and the problem, but not the
/// offending value, which may be a client's phone number; [`MappingError::detailed`] adds it for
/// `salespulse sources test`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("source `{source_name}`, rule `{rule}`{}: {problem}", self.location())]
pub struct MappingError {
    /// The source (mapping) name.
    pub source_name: String,
    /// The rule, or [`DECODE_RULE`].
    pub rule: String,
    /// The canonical field (or `when`, `each`, `remember`) whose expression failed.
    pub field: Option<String>,
    /// The expression's text.
    pub expression: Option<String>,
    /// What was wrong.
    pub problem: String,
    /// The value that was wrong, if one was.
    pub value: Option<String>,
}

impl MappingError {
    fn location(&self) -> String {
        match (&self.field, &self.expression) {
            (Some(field), Some(expression)) => format!(", field `{field}` = `{expression}`"),
            (Some(field), None) => format!(", field `{field}`"),
            _ => String::new(),
        }
    }

    /// The message with the offending value, for offline use.
    pub fn detailed(&self) -> String {
        match &self.value {
            Some(value) => format!("{self} (value: {value})"),
            None => self.to_string(),
        }
    }
}

/// What one payload gave: the events that mapped and validated, and the errors of the items that
/// did not (one bad message in a batch does not lose the others).
#[derive(Debug, Default)]
pub struct Mapped {
    /// Valid canonical events, in rule order, then document order.
    pub events: Vec<Event>,
    /// Why other items failed; empty when everything mapped.
    pub errors: Vec<MappingError>,
}

// ---------------------------------------------------------------------------------------------
// The file format

/// A mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// The source's name: the `source` field of its events, the gateway's `/hooks/<source>`, and
    /// the key of the manager directory.
    source: String,
    /// What the source is, for people.
    #[serde(default)]
    description: Option<String>,
    /// `json`, `form`, `form_brackets`, `form_json` or `ami`.
    decoder: String,
    /// For `form_json`: the form field holding JSON.
    #[serde(default)]
    json_field: Option<String>,
    /// The zone of `strptime` times without an offset (IANA name); UTC unless given.
    #[serde(default)]
    time_zone: Option<String>,
    /// How many remembered values to keep at most.
    #[serde(default)]
    remember_capacity: Option<usize>,
    /// The status the gateway answers an accepted webhook with (default 202; some vendors,
    /// like Wazzup, insist on 200).
    #[serde(default)]
    accept_status: Option<u16>,
    /// How the gateway authenticates the source's webhooks.
    #[serde(default)]
    auth: Option<AuthSpec>,
    /// The rules, each producing events of one kind.
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSpec {
    /// `token` or `twilio_signature`.
    scheme: String,
    /// The environment variable holding the shared secret.
    secret_env: String,
    /// For `token`: the header carrying it (`Bearer ` prefix allowed).
    #[serde(default)]
    header: Option<String>,
    /// For `token`: the query parameter carrying it.
    #[serde(default)]
    query: Option<String>,
    /// For `token`: the form field carrying it (bracket syntax allowed).
    #[serde(default)]
    form_field: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    /// The rule's name: the `rule` label of its counters and errors.
    name: String,
    /// `call`, `message` or `card_change`.
    kind: String,
    /// A path with `[*]` wildcards: one event per selected node (`@` in expressions).
    #[serde(default)]
    each: Option<String>,
    /// Conditions that must all hold for an event to be produced.
    #[serde(default)]
    when: Option<OneOrMany>,
    /// A value remembered per entity (`previous` / `current` in expressions).
    #[serde(default)]
    remember: Option<RememberSpec>,
    /// Canonical field -> expression (a string), or a TOML number/boolean constant.
    fields: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RememberSpec {
    /// Which entity the value belongs to (a task id, a deal id).
    entity: String,
    /// The value to remember (a due date, a stage).
    value: String,
}

// ---------------------------------------------------------------------------------------------
// Compiled form

/// The canonical fields a rule may set, per kind (`kind` itself comes from the rule).
const COMMON_FIELDS: &[&str] = &["event_id", "occurred_at", "manager_id", "team", "source"];
const CALL_FIELDS: &[&str] = &[
    "call_id",
    "direction",
    "status",
    "started_at",
    "answered_at",
    "ended_at",
    "talk_seconds",
    "client_id",
    "card_id",
];
const MESSAGE_FIELDS: &[&str] = &["message_id", "dialog_id", "channel", "direction", "client_id", "new_dialog"];
const CARD_FIELDS: &[&str] = &[
    "card_id",
    "card_type",
    "change",
    "pipeline",
    "stage_from",
    "stage_to",
    "stage_progress_pct",
    "comment_length",
    "task_id",
    "task_due_at",
    "task_due_from",
    "amount",
    "client_id",
    "margin",
    "invoice_id",
    "currency",
];
/// Fields written as JSON numbers (times are epoch milliseconds).
const NUMBER_FIELDS: &[&str] = &[
    "occurred_at",
    "started_at",
    "answered_at",
    "ended_at",
    "talk_seconds",
    "stage_progress_pct",
    "comment_length",
    "task_due_at",
    "task_due_from",
    "amount",
    "margin",
];
/// Fields written as JSON booleans.
const BOOL_FIELDS: &[&str] = &["new_dialog"];

fn kind_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Call => CALL_FIELDS,
        Kind::Message => MESSAGE_FIELDS,
        Kind::CardChange => CARD_FIELDS,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Text,
    Number,
    Bool,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    /// The contract field `name` stands for.
    field: salespulse_events::Field,
    shape: Shape,
    text: String,
    expr: Expr,
}

#[derive(Debug)]
struct Rule {
    name: String,
    kind: Kind,
    each: Option<expr::Path>,
    when: Vec<(String, Expr)>,
    remember: Option<(Expr, Expr)>,
    fields: Vec<Field>,
    /// Whether `source` is set by the rule (else the source's name is used).
    sets_source: bool,
    /// Cache slots of the rule's shared sub-expressions ([`expr::share_common`]).
    shared_slots: usize,
    counters: std::sync::OnceLock<RuleCounters>,
}

#[derive(Debug, Clone)]
struct RuleCounters {
    events: prometheus::IntCounter,
    errors: prometheus::IntCounter,
}

/// One compiled mapping file.
pub struct Source {
    name: String,
    description: Option<String>,
    decoder: Decoder,
    zone: Tz,
    auth: Option<Auth>,
    accept_status: u16,
    rules: Vec<Rule>,
    directory: Arc<Directory>,
    memory: Mutex<Memory>,
    decode_errors: std::sync::OnceLock<prometheus::IntCounter>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("decoder", &self.decoder)
            .field("rules", &self.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Compiles a mapping file's text, reading manager keys from `directory`.
    pub fn compile(text: &str, directory: Arc<Directory>) -> Result<Source, CompileError> {
        Source::compile_named(text, "<inline>", directory)
    }

    /// Compiles the mapping file at `path`.
    pub fn load(path: &Path, directory: Arc<Directory>) -> Result<Source, CompileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CompileError { origin: origin.clone(), detail: format!("cannot read: {e}") })?;
        Source::compile_named(&text, &origin, directory)
    }

    fn compile_named(text: &str, origin: &str, directory: Arc<Directory>) -> Result<Source, CompileError> {
        let error = |detail: String| CompileError { origin: origin.to_owned(), detail };
        let spec: FileSpec = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let name = spec.source.trim().to_owned();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(error(format!("source {:?}: use letters, digits, `_` and `-` only", spec.source)));
        }
        let decoder = match (spec.decoder.as_str(), spec.json_field) {
            ("json", None) => Decoder::Json,
            ("form", None) => Decoder::Form,
            ("form_brackets", None) => Decoder::FormBrackets,
            ("form_json", Some(field)) => Decoder::FormJson { field },
            ("form_json", None) => return Err(error("decoder `form_json` needs `json_field`".into())),
            ("ami", None) => Decoder::AmiBlocks,
            (_, Some(_)) if ["json", "form", "form_brackets", "ami"].contains(&spec.decoder.as_str()) => {
                return Err(error("`json_field` is only for decoder `form_json`".into()))
            }
            (other, _) => {
                return Err(error(format!("unknown decoder {other:?} (json, form, form_brackets, form_json, ami)")))
            }
        };
        let zone: Tz = match &spec.time_zone {
            Some(zone) => zone.parse().map_err(|_| error(format!("unknown time zone {zone:?}")))?,
            None => Tz::UTC,
        };
        let auth = spec.auth.map(|a| Auth::from_spec(a.scheme, a.secret_env, a.header, a.query, a.form_field));
        let auth = auth.transpose().map_err(|detail| error(format!("[auth]: {detail}")))?;
        if spec.rules.is_empty() {
            return Err(error("no [[rules]]".into()));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for rule in spec.rules {
            if rules.iter().any(|r| r.name == rule.name) || rule.name == DECODE_RULE || rule.name.is_empty() {
                return Err(error(format!("rule name {:?} is empty, reserved or used twice", rule.name)));
            }
            let compiled = compile_rule(rule).map_err(error)?;
            rules.push(compiled);
        }
        let capacity = spec.remember_capacity.unwrap_or(DEFAULT_REMEMBER_CAPACITY).max(2);
        let accept_status = spec.accept_status.unwrap_or(202);
        if !(200..300).contains(&accept_status) {
            return Err(error(format!("accept_status {accept_status} is not a 2xx status")));
        }
        Ok(Source {
            name,
            description: spec.description,
            decoder,
            zone,
            auth,
            accept_status,
            rules,
            directory,
            memory: Mutex::new(Memory::new(capacity)),
            decode_errors: std::sync::OnceLock::new(),
        })
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// How the body is decoded.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// How the gateway checks requests, if the source defines it.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The 2xx status the gateway answers an accepted webhook with.
    pub fn accept_status(&self) -> u16 {
        self.accept_status
    }

    /// The rules' names, in order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Entities with a remembered value now.
    pub fn remembered(&self) -> usize {
        self.memory.lock().len()
    }

    /// Maps one payload. Never panics; errors are per item, so the good events of a batch survive.
    /// Remembered values are read and stored as by the newest record of the log (offline use, a
    /// gateway); [`Source::map_at`] is the daemon's form.
    pub fn map(&self, payload: &[u8]) -> Mapped {
        self.map_at(payload, None)
    }

    /// [`Source::map`] of the record at log position `at`: a remembered value is the latest one
    /// set before `at` in its partition, so a rebuild that replays records after a restart sees
    /// the previous values the first pass saw (see [`Sources::restore_memory`]).
    pub fn map_at(&self, payload: &[u8], at: Option<Position>) -> Mapped {
        let mut mapped = Mapped::default();
        let document = match self.decoder.decode(payload) {
            Ok(document) => document,
            Err(problem) => {
                if let Some(counter) = self.decode_errors.get() {
                    counter.inc();
                }
                mapped.errors.push(MappingError {
                    source_name: self.name.clone(),
                    rule: DECODE_RULE.into(),
                    field: None,
                    expression: None,
                    problem: format!("{} body: {problem}", self.decoder.name()),
                    value: None,
                });
                return mapped;
            }
        };
        let mut items: Vec<&Node> = Vec::new();
        let cache = RefCell::new(Vec::new());
        for rule in &self.rules {
            items.clear();
            match &rule.each {
                Some(path) => path.select(&document, &document, &mut items),
                None => items.push(&document),
            }
            for item in &items {
                {
                    let mut cache = cache.borrow_mut();
                    cache.clear();
                    cache.resize(rule.shared_slots, None);
                }
                match self.map_item(rule, &document, item, &cache, at) {
                    Ok(Some(event)) => {
                        if let Some(c) = rule.counters.get() {
                            c.events.inc();
                        }
                        mapped.events.push(event);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        if let Some(c) = rule.counters.get() {
                            c.errors.inc();
                        }
                        mapped.errors.push(*error);
                    }
                }
            }
        }
        mapped
    }

    fn map_item(
        &self,
        rule: &Rule,
        document: &Node,
        item: &Node,
        cache: &RefCell<Vec<Option<Val>>>,
        at: Option<Position>,
    ) -> Result<Option<Event>, Box<MappingError>> {
        let error = |field: &str, expression: Option<&str>, problem: String, value: Option<String>| {
            Box::new(MappingError {
                source_name: self.name.clone(),
                rule: rule.name.clone(),
                field: Some(field.to_owned()),
                expression: expression.map(str::to_owned),
                problem,
                value,
            })
        };
        let mut scope = Scope {
            document,
            item,
            previous: &Val::Null,
            current: &Val::Null,
            zone: self.zone,
            source: &self.name,
            directory: &self.directory,
            cache,
        };
        // Remembered value: looked up before `when` and the fields see it, stored only once the
        // event is produced (so a filtered or failed item does not move it).
        let mut remembered: Option<(u64, Val, Val)> = None;
        if let Some((entity, value)) = &rule.remember {
            let eval = |e: &Expr| e.eval(&scope).map_err(|e| error("remember", None, e.problem, e.value));
            let entity = eval(entity)?;
            let current = eval(value)?;
            if !entity.is_null() {
                let key = Memory::key(&rule.name, &entity.text());
                let previous = self.memory.lock().get(key, at).map_or(Val::Null, |v| Val::Str(v.to_owned()));
                remembered = Some((key, previous, current));
            }
        }
        if let Some((_, previous, current)) = &remembered {
            scope.previous = previous;
            scope.current = current;
        }
        for (text, condition) in &rule.when {
            let holds = condition.eval(&scope).map_err(|e| error("when", Some(text), e.problem, e.value))?;
            if !holds.truthy() {
                return Ok(None);
            }
        }
        // The event is built from typed values and validated by salespulse-events exactly as
        // its JSON decoder would validate `{"kind": .., field: value, ..}` (no JSON is written
        // and parsed again).
        let mut fields = EventFields::new();
        if !rule.sets_source {
            fields.set(salespulse_events::Field::Source, FieldValue::Str(Cow::Borrowed(&self.name)));
        }
        for field in &rule.fields {
            let value =
                field.expr.eval(&scope).map_err(|e| error(field.name, Some(&field.text), e.problem, e.value))?;
            let value = match (field.shape, value) {
                (_, Val::Null) => continue,
                (Shape::Number, value) => match value.number() {
                    Some(n) => number_value(n),
                    None => {
                        let shown = Some(format!("{value:?}"));
                        return Err(error(field.name, Some(&field.text), "expected a number".into(), shown));
                    }
                },
                (Shape::Bool, value) => FieldValue::Bool(value.truthy()),
                (Shape::Text, Val::Str(text)) => FieldValue::Str(Cow::Owned(text)),
                (Shape::Text, value) => FieldValue::Str(Cow::Owned(value.text())),
            };
            fields.set(field.field, value);
        }
        let event = fields.into_event(Some(rule.kind)).map_err(|e| {
            let field = e.field().unwrap_or("event");
            let expression = rule.fields.iter().find(|f| f.name == field).map(|f| f.text.as_str());
            error(field, expression, format!("invalid event: {e}"), None)
        })?;
        if let Some((key, _, current)) = remembered {
            if !current.is_null() {
                self.memory.lock().put(key, current.text(), at);
            }
        }
        Ok(Some(event))
    }

    fn register(&self, errors: &prometheus::IntCounterVec, events: &prometheus::IntCounterVec) {
        let _ = self.decode_errors.set(errors.with_label_values(&[&self.name, DECODE_RULE]));
        for rule in &self.rules {
            let _ = rule.counters.set(RuleCounters {
                events: events.with_label_values(&[&self.name, &rule.name]),
                errors: errors.with_label_values(&[&self.name, &rule.name]),
            });
        }
    }
}

/// A number as the JSON decoder would read its shortest text: integers below 2^53 as integers
/// (non-negative ones unsigned), everything else as a float.
fn number_value(n: f64) -> FieldValue<'static> {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        if n >= 0.0 {
            FieldValue::Uint(n as u64)
        } else {
            FieldValue::Int(n as i64)
        }
    } else {
        FieldValue::Float(n)
    }
}

fn compile_rule(spec: RuleSpec) -> Result<Rule, String> {
    let name = spec.name;
    let at = |what: &str, e: String| format!("rule `{name}`, {what}: {e}");
    let kind = Kind::parse(&spec.kind)
        .ok_or_else(|| at("kind", format!("unknown kind {:?} (call, message, card_change)", spec.kind)))?;
    let each = spec.each.as_deref().map(expr::parse_each).transpose().map_err(|e| at("each", e))?;
    let when_texts = match spec.when {
        None => Vec::new(),
        Some(OneOrMany::One(text)) => vec![text],
        Some(OneOrMany::Many(texts)) => texts,
    };
    let mut when = Vec::new();
    for text in when_texts {
        let e = expr::parse(&text).map_err(|e| at(&format!("when `{text}`"), e))?;
        when.push((text, e));
    }
    let mut remember = match spec.remember {
        Some(r) => {
            let entity = expr::parse(&r.entity).map_err(|e| at("remember.entity", e))?;
            let value = expr::parse(&r.value).map_err(|e| at("remember.value", e))?;
            if entity.uses_memory() || value.uses_memory() {
                return Err(at("remember", "cannot use `previous` or `current` itself".into()));
            }
            Some((entity, value))
        }
        None => None,
    };
    let allowed = kind_fields(kind);
    let mut fields = Vec::new();
    for (field, value) in spec.fields {
        let Some(&canonical) = COMMON_FIELDS.iter().chain(allowed.iter()).find(|f| **f == field) else {
            return Err(at(
                &format!("field `{field}`"),
                format!("not a field of a {kind} event ({})", [COMMON_FIELDS, allowed].concat().join(", ")),
            ));
        };
        let (text, expr) = match value {
            toml::Value::String(text) => {
                let e = expr::parse(&text).map_err(|e| at(&format!("field `{field}`"), e))?;
                (text, e)
            }
            toml::Value::Integer(n) => (n.to_string(), Expr::Const(Val::Num(n as f64))),
            toml::Value::Float(n) => (n.to_string(), Expr::Const(Val::Num(n))),
            toml::Value::Boolean(b) => (b.to_string(), Expr::Const(Val::Bool(b))),
            other => {
                return Err(at(&format!("field `{field}`"), format!("expected an expression string, got {other}")))
            }
        };
        if remember.is_none() && expr.uses_memory() {
            return Err(at(&format!("field `{field}`"), "uses `previous`/`current` without `remember`".into()));
        }
        let shape = if NUMBER_FIELDS.contains(&canonical) {
            Shape::Number
        } else if BOOL_FIELDS.contains(&canonical) {
            Shape::Bool
        } else {
            Shape::Text
        };
        // Every name in the tables above is a contract field (checked by a test).
        let Some(contract) = salespulse_events::Field::from_key(canonical) else {
            return Err(at(&format!("field `{field}`"), "not a contract field".into()));
        };
        fields.push(Field { name: canonical, field: contract, shape, text, expr });
    }
    for required in ["event_id", "occurred_at", "manager_id"] {
        if !fields.iter().any(|f| f.name == required) {
            return Err(at("fields", format!("`{required}` is required")));
        }
    }
    if remember.is_none() && when.iter().any(|(_, e)| e.uses_memory()) {
        return Err(at("when", "uses `previous`/`current` without `remember`".into()));
    }
    let sets_source = fields.iter().any(|f| f.name == "source");
    let mut exprs: Vec<&mut Expr> = Vec::new();
    if let Some((entity, value)) = &mut remember {
        exprs.push(entity);
        exprs.push(value);
    }
    exprs.extend(when.iter_mut().map(|(_, e)| e));
    exprs.extend(fields.iter_mut().map(|f| &mut f.expr));
    let shared_slots = expr::share_common(&mut exprs);
    Ok(Rule {
        name,
        kind,
        each,
        when,
        remember,
        fields,
        sets_source,
        shared_slots,
        counters: std::sync::OnceLock::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Sets of sources

/// Every mapping of a `sources/` directory, by name.
#[derive(Debug, Default)]
pub struct Sources {
    sources: Vec<Arc<Source>>,
}

/// Loading a directory of mappings failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The manager directory is invalid.
    #[error("{path}: {detail}")]
    Directory {
        /// The directory file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A mapping does not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Two files name the same source.
    #[error("source `{0}` is defined twice")]
    Duplicate(String),
}

impl Sources {
    /// Reads the manager directory file (if any) and compiles every `*.toml` file of `dir`.
    pub fn load(dir: &Path, directory_file: Option<&Path>) -> Result<Sources, LoadError> {
        let directory = match directory_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.into(), source })?;
                Directory::parse(&text).map_err(|detail| LoadError::Directory { path: path.into(), detail })?
            }
            None => Directory::default(),
        };
        let directory = Arc::new(directory);
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.into(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut sources = Sources::default();
        for path in paths {
            let source = Source::load(&path, Arc::clone(&directory))?;
            if sources.get(source.name()).is_some() {
                return Err(LoadError::Duplicate(source.name().to_owned()));
            }
            sources.sources.push(Arc::new(source));
        }
        Ok(sources)
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Every source, in file-name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.sources.iter()
    }

    /// Every source's remembered values as a snapshot (JSON bytes, for the daemon to write to
    /// a file), and the number of entities in it. At most `remember_capacity` entities of
    /// [`HISTORY`] values per source, so it is bounded.
    pub fn memory_snapshot(&self) -> (Vec<u8>, usize) {
        memory::snapshot(self.sources.iter().map(|s| (s.name.as_str(), &s.memory)))
    }

    /// Restores remembered values from a [`Sources::memory_snapshot`]; call before the first
    /// payload is mapped. Each value carries the log position of the record that set it, so the
    /// records a rebuild replays after a restart see what they saw the first time
    /// ([`Source::map_at`]), and entities last changed before the replayed stretch keep their
    /// value instead of starting over. Returns the entities restored.
    pub fn restore_memory(&self, snapshot: &[u8]) -> Result<usize, SnapshotError> {
        memory::restore(snapshot, self.sources.iter().map(|s| (s.name.as_str(), &s.memory)))
    }

    /// Registers `salespulse_source_events_total` and `salespulse_source_errors_total` and
    /// creates every source's and rule's series up front.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let events = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "salespulse_source_events_total",
                "Canonical events produced by a source mapping rule.",
            ),
            &["source", "rule"],
        )?;
        let errors = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "salespulse_source_errors_total",
                "Payload items a source mapping rule could not map (rule=\"decode\": the body did not decode).",
            ),
            &["source", "rule"],
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        for source in &self.sources {
            source.register(&errors, &events);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
