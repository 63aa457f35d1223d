//! The JSON encoding: one flat object per event.
//!
//! Decoding makes one pass over the payload into a fixed array of borrowed scalars (no
//! `serde_json::Value` tree): strings without escapes are borrowed from the payload, unknown keys
//! and nested values are skipped without building anything. Type and contract checks then run on
//! that array, so every error can name its field.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::DecodeError;
use crate::model::{CallDirection, CallStatus, CardChangeKind, CardType, Event, EventBody, Kind, MessageDirection};
use crate::time;
use crate::validate::{resolve_kind, CallIn, CardChangeIn, Header, MessageIn};

type Result<T> = std::result::Result<T, DecodeError>;

/// One JSON value as far as the contract cares: scalars are kept, arrays and objects are skipped.
#[derive(Debug, Default)]
enum Scalar<'a> {
    /// The key did not occur.
    #[default]
    Absent,
    /// `null`, which the contract treats like absent.
    Null,
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    /// An array or object (skipped).
    Compound,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        // `IgnoredAny` makes serde_json skip iteratively: no recursion however deep the nesting.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
}

/// Declares the contract's JSON keys: an enum `F` of them, their count, their names and the lookup
/// from a key.
macro_rules! fields {
    ($($variant:ident => $name:literal,)+) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum F {
            $($variant,)+
        }

        const FIELD_COUNT: usize = [$(F::$variant),+].len();

        impl F {
            fn name(self) -> &'static str {
                match self {
                    $(F::$variant => $name,)+
                }
            }

            fn from_key(key: &str) -> Option<F> {
                match key {
                    $($name => Some(F::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

fields! {
    EventId => "event_id",
    OccurredAt => "occurred_at",
    ManagerId => "manager_id",
    Team => "team",
    Source => "source",
    Kind => "kind",
    CallId => "call_id",
    Direction => "direction",
    Status => "status",
    StartedAt => "started_at",
    AnsweredAt => "answered_at",
    EndedAt => "ended_at",
    TalkSeconds => "talk_seconds",
    ClientId => "client_id",
    CardId => "card_id",
    MessageId => "message_id",
    DialogId => "dialog_id",
    Channel => "channel",
    NewDialog => "new_dialog",
    CardType => "card_type",
    Change => "change",
    Pipeline => "pipeline",
    StageFrom => "stage_from",
    StageTo => "stage_to",
    StageProgressPct => "stage_progress_pct",
    CommentLength => "comment_length",
    TaskId => "task_id",
    TaskDueAt => "task_due_at",
    TaskDueFrom => "task_due_from",
    Amount => "amount",
    Margin => "margin",
    InvoiceId => "invoice_id",
    Currency => "currency",
}

/// A map key: one of the contract's fields, or an unknown key to skip.
struct Key(Option<F>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Key, E> {
        Ok(Key(F::from_key(v)))
    }
}

/// The top-level object, one slot per contract field.
struct RawEvent<'a> {
    slots: [Scalar<'a>; FIELD_COUNT],
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut raw = RawEvent { slots: [const { Scalar::Absent }; FIELD_COUNT] };
        while let Some(Key(field)) = map.next_key()? {
            match field {
                Some(f) => {
                    let slot = &mut raw.slots[f as usize];
                    if !matches!(slot, Scalar::Absent) {
                        return Err(de::Error::duplicate_field(f.name()));
                    }
                    *slot = map.next_value()?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

impl<'a> RawEvent<'a> {
    fn take(&mut self, f: F) -> Scalar<'a> {
        std::mem::take(&mut self.slots[f as usize])
    }

    fn present(&self, f: F) -> bool {
        !matches!(self.slots[f as usize], Scalar::Absent | Scalar::Null)
    }

    fn string(&mut self, f: F) -> Result<Option<String>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Str(s) => Ok(Some(s.into_owned())),
            _ => Err(DecodeError::invalid(f.name(), "expected a string")),
        }
    }

    fn time(&mut self, f: F) -> Result<Option<i64>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Str(s) => match time::parse_rfc3339(&s) {
                Some(ms) => Ok(Some(ms)),
                None => Err(DecodeError::invalid(f.name(), "not an RFC 3339 date-time")),
            },
            Scalar::I64(ms) => Ok(Some(ms)),
            Scalar::U64(ms) => match i64::try_from(ms) {
                Ok(ms) => Ok(Some(ms)),
                Err(_) => Err(DecodeError::invalid(f.name(), "not within years 2000..2100")),
            },
            _ => Err(DecodeError::invalid(f.name(), "expected an RFC 3339 string or integer epoch milliseconds")),
        }
    }

    fn number(&mut self, f: F) -> Result<Option<f64>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::F64(v) => Ok(Some(v)),
            Scalar::I64(v) => Ok(Some(v as f64)),
            Scalar::U64(v) => Ok(Some(v as f64)),
            _ => Err(DecodeError::invalid(f.name(), "expected a number")),
        }
    }

    fn uint32(&mut self, f: F) -> Result<Option<u32>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::U64(v) => match u32::try_from(v) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(DecodeError::invalid(f.name(), "not within 0..=4294967295")),
            },
            Scalar::I64(_) => Err(DecodeError::invalid(f.name(), "not within 0..=4294967295")),
            _ => Err(DecodeError::invalid(f.name(), "expected a non-negative integer")),
        }
    }

    fn boolean(&mut self, f: F) -> Result<Option<bool>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Bool(v) => Ok(Some(v)),
            _ => Err(DecodeError::invalid(f.name(), "expected true or false")),
        }
    }

    /// An enum spelled as its snake_case string; an empty string counts as absent.
    fn enumeration<T>(&mut self, f: F, parse: fn(&str) -> Option<T>) -> Result<Option<T>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Str(s) if s.is_empty() => Ok(None),
            Scalar::Str(s) => match parse(&s) {
                Some(v) => Ok(Some(v)),
                None => Err(DecodeError::invalid(f.name(), "unknown value")),
            },
            _ => Err(DecodeError::invalid(f.name(), "expected a string")),
        }
    }

    /// The kind when neither the payload nor the topic says: exactly one body id decides (a call
    /// may also carry `card_id`).
    fn infer_kind(&self) -> Result<Kind> {
        let call = self.present(F::CallId);
        let message = self.present(F::MessageId);
        let card = self.present(F::CardId);
        match (call, message, card) {
            (true, false, _) => Ok(Kind::Call),
            (false, true, false) => Ok(Kind::Message),
            (false, false, true) => Ok(Kind::CardChange),
            _ => Err(DecodeError::missing("kind")),
        }
    }
}

/// Decodes one JSON payload (size already checked).
pub(crate) fn decode(payload: &[u8], expected: Option<Kind>) -> Result<Event> {
    // Validate UTF-8 over the whole payload first: serde_json skips unknown values without
    // looking inside their strings, and parsing a `&str` then needs no further checks.
    let text = std::str::from_utf8(payload)
        .map_err(|e| DecodeError::MalformedJson { detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()) })?;
    let mut raw: RawEvent<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::MalformedJson { detail: e.to_string() })?;

    let declared = match raw.take(F::Kind) {
        Scalar::Absent | Scalar::Null => None,
        Scalar::Str(s) if s.is_empty() => None,
        Scalar::Str(s) => Some(Kind::parse(&s).ok_or_else(|| DecodeError::unknown_kind(&s))?),
        _ => return Err(DecodeError::invalid("kind", "expected a string")),
    };
    let kind = match resolve_kind(declared, expected)? {
        Some(kind) => kind,
        None => raw.infer_kind()?,
    };

    let header = Header {
        event_id: raw.string(F::EventId)?,
        occurred_at: raw.time(F::OccurredAt)?,
        manager_id: raw.string(F::ManagerId)?,
        team: raw.string(F::Team)?,
        source: raw.string(F::Source)?,
    }
    .check()?;

    let body = match kind {
        Kind::Call => EventBody::Call(
            CallIn {
                call_id: raw.string(F::CallId)?,
                direction: raw.enumeration(F::Direction, CallDirection::parse)?,
                status: raw.enumeration(F::Status, CallStatus::parse)?,
                started_at: raw.time(F::StartedAt)?,
                answered_at: raw.time(F::AnsweredAt)?,
                ended_at: raw.time(F::EndedAt)?,
                talk_seconds: raw.number(F::TalkSeconds)?,
                client_id: raw.string(F::ClientId)?,
                card_id: raw.string(F::CardId)?,
            }
            .check()?,
        ),
        Kind::Message => EventBody::Message(
            MessageIn {
                message_id: raw.string(F::MessageId)?,
                dialog_id: raw.string(F::DialogId)?,
                channel: raw.string(F::Channel)?,
                direction: raw.enumeration(F::Direction, MessageDirection::parse)?,
                client_id: raw.string(F::ClientId)?,
                new_dialog: raw.boolean(F::NewDialog)?,
            }
            .check()?,
        ),
        Kind::CardChange => EventBody::CardChange(
            CardChangeIn {
                card_id: raw.string(F::CardId)?,
                card_type: raw.enumeration(F::CardType, CardType::parse)?,
                change: raw.enumeration(F::Change, CardChangeKind::parse)?,
                pipeline: raw.string(F::Pipeline)?,
                stage_from: raw.string(F::StageFrom)?,
                stage_to: raw.string(F::StageTo)?,
                stage_progress_pct: raw.number(F::StageProgressPct)?,
                comment_length: raw.uint32(F::CommentLength)?,
                task_id: raw.string(F::TaskId)?,
                task_due_at: raw.time(F::TaskDueAt)?,
                task_due_from: raw.time(F::TaskDueFrom)?,
                amount: raw.number(F::Amount)?,
                client_id: raw.string(F::ClientId)?,
                margin: raw.number(F::Margin)?,
                invoice_id: raw.string(F::InvoiceId)?,
                currency: raw.string(F::Currency)?,
            }
            .check()?,
        ),
    };
    Ok(header.with_body(body))
}

/// Appends `"key":` (with the separating comma) to an object being written.
struct ObjectWriter {
    out: String,
    empty: bool,
}

impl ObjectWriter {
    fn key(&mut self, key: &str) {
        if self.empty {
            self.empty = false;
        } else {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(&mut self.out, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    fn time(&mut self, key: &str, ms: i64) {
        self.key(key);
        time::write_rfc3339(&mut self.out, ms);
    }

    fn opt_time(&mut self, key: &str, ms: Option<i64>) {
        if let Some(ms) = ms {
            self.time(key, ms);
        }
    }

    /// A finite number in its shortest round-tripping form; a non-finite one as `null`.
    fn number(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    fn opt_number(&mut self, key: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.number(key, v);
        }
    }

    fn opt_display(&mut self, key: &str, value: Option<impl fmt::Display>) {
        if let Some(v) = value {
            self.key(key);
            let _ = write!(self.out, "{v}");
        }
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices fall on char boundaries.
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Encodes `event` as canonical JSON: `kind` first, then the common fields, then the body's, in
/// contract order; absent optional fields are left out; times are RFC 3339 UTC with milliseconds;
/// a call's `talk_seconds` is always written (the resolved talk time).
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    let mut w = ObjectWriter { out: String::with_capacity(384), empty: true };
    w.out.push('{');
    w.str("kind", event.kind().as_str());
    w.str("event_id", &event.event_id);
    w.time("occurred_at", event.occurred_at_ms);
    w.str("manager_id", &event.manager_id);
    w.opt_str("team", event.team.as_deref());
    w.opt_str("source", event.source.as_deref());
    match &event.body {
        EventBody::Call(c) => {
            w.str("call_id", &c.call_id);
            w.str("direction", c.direction.as_str());
            w.str("status", c.status.as_str());
            w.time("started_at", c.started_at_ms);
            w.opt_time("answered_at", c.answered_at_ms);
            w.time("ended_at", c.ended_at_ms);
            w.number("talk_seconds", c.talk_ms as f64 / 1000.0);
            w.opt_str("client_id", c.client_id.as_deref());
            w.opt_str("card_id", c.card_id.as_deref());
        }
        EventBody::Message(m) => {
            w.str("message_id", &m.message_id);
            w.str("dialog_id", &m.dialog_id);
            w.str("channel", &m.channel);
            w.str("direction", m.direction.as_str());
            w.opt_str("client_id", m.client_id.as_deref());
            w.opt_display("new_dialog", m.new_dialog);
        }
        EventBody::CardChange(c) => {
            w.str("card_id", &c.card_id);
            w.str("card_type", c.card_type.as_str());
            w.str("change", c.change.as_str());
            w.opt_str("pipeline", c.pipeline.as_deref());
            w.opt_str("stage_from", c.stage_from.as_deref());
            w.opt_str("stage_to", c.stage_to.as_deref());
            w.opt_number("stage_progress_pct", c.stage_progress_pct);
            w.opt_display("comment_length", c.comment_length);
            w.opt_str("task_id", c.task_id.as_deref());
            w.opt_time("task_due_at", c.task_due_at_ms);
            w.opt_time("task_due_from", c.task_due_from_ms);
            w.opt_number("amount", c.amount);
            w.opt_str("client_id", c.client_id.as_deref());
            w.opt_number("margin", c.margin);
            w.opt_str("invoice_id", c.invoice_id.as_deref());
            w.opt_str("currency", c.currency.as_deref());
        }
    }
    w.out.push('}');
    w.out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let mut out = String::new();
        write_json_string(&mut out, input);
        assert_eq!(out, expected);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), input);
    }

    #[test]
    fn strings_are_escaped() {
        check("", r#""""#);
        check("plain", r#""plain""#);
        check("a\"b\\c", r#""a\"b\\c""#);
        check("\n\r\t", r#""\n\r\t""#);
        check("\u{0}\u{1f}\u{7f}", "\"\\u0000\\u001f\u{7f}\"");
        check("Анна ✓ 😀", "\"Анна ✓ 😀\"");
    }

    #[test]
    fn keys_map_to_fields() {
        assert_eq!(F::from_key("event_id"), Some(F::EventId));
        assert_eq!(F::from_key("amount"), Some(F::Amount));
        assert_eq!(F::from_key("Event_Id"), None);
        assert_eq!(F::from_key("text"), None);
        assert_eq!(F::Currency as usize + 1, FIELD_COUNT);
    }
}
