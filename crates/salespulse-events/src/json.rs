//! The JSON encoding: one flat object per event.
//!
//! Decoding makes one pass over the payload into a fixed array of borrowed scalars (no
//! `serde_json::Value` tree): strings without escapes are borrowed from the payload, unknown keys
//! and nested values are skipped without building anything. Type and contract checks then run on
//! that array ([`EventFields::into_event`], shared with callers that build events from typed
//! values), so every error can name its field.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::DecodeError;
use crate::fields::{EventFields, Field, Scalar};
use crate::model::{Event, EventBody, Kind};
use crate::time;

type Result<T> = std::result::Result<T, DecodeError>;

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

/// A map key: one of the contract's fields, or an unknown key to skip.
struct Key(Option<Field>);

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
        Ok(Key(Field::from_key(v)))
    }
}

impl<'de> Deserialize<'de> for EventFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = EventFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut raw = EventFields::new();
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

/// Decodes one JSON payload (size already checked).
pub(crate) fn decode(payload: &[u8], expected: Option<Kind>) -> Result<Event> {
    // Validate UTF-8 over the whole payload first: serde_json skips unknown values without
    // looking inside their strings, and parsing a `&str` then needs no further checks.
    let text = std::str::from_utf8(payload)
        .map_err(|e| DecodeError::MalformedJson { detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()) })?;
    let raw: EventFields<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::MalformedJson { detail: e.to_string() })?;

    raw.into_event(expected)
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
    use crate::fields::FIELD_COUNT;

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
        assert_eq!(Field::from_key("event_id"), Some(Field::EventId));
        assert_eq!(Field::from_key("amount"), Some(Field::Amount));
        assert_eq!(Field::from_key("Event_Id"), None);
        assert_eq!(Field::from_key("text"), None);
        assert_eq!(Field::Currency as usize + 1, FIELD_COUNT);
    }
}
