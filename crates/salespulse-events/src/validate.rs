//! Validation shared by both encodings. Each decoder maps "absent" in its own terms (JSON: no key
//! or `null`; protobuf: the default 0 / `UNSPECIFIED`) to `None` and hands the typed fields here.

use crate::error::DecodeError;
use crate::model::{
    Call, CallDirection, CallStatus, CardChange, CardChangeKind, CardType, Event, EventBody, Kind, Message,
    MessageDirection,
};
use crate::time;

type Result<T> = std::result::Result<T, DecodeError>;

/// Longest `event_id` and id field (`call_id`, `client_id`, ...), in bytes.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Longest `manager_id`, in bytes.
pub(crate) const MAX_MANAGER_ID_BYTES: usize = 128;
/// Longest `team` and `source`, in bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 128;
/// Longest `channel`, in bytes.
pub(crate) const MAX_CHANNEL_BYTES: usize = 64;
/// Longest call, in seconds of talk.
pub(crate) const MAX_TALK_SECONDS: f64 = 86_400.0;
/// Manager ids with at least this many digits (once `+ -()` and spaces are removed) look like
/// phone numbers.
const PHONE_MIN_DIGITS: usize = 10;

/// Resolves the kind of an event from the kind it declares (if any) and the topic's configured
/// kind (if any). `None` when neither says; the caller may then infer.
pub(crate) fn resolve_kind(declared: Option<Kind>, expected: Option<Kind>) -> Result<Option<Kind>> {
    match (declared, expected) {
        (Some(actual), Some(expected)) if actual != expected => Err(DecodeError::KindMismatch { expected, actual }),
        (Some(kind), _) | (None, Some(kind)) => Ok(Some(kind)),
        (None, None) => Ok(None),
    }
}

/// The fields common to every kind, as decoded.
pub(crate) struct Header {
    pub event_id: Option<String>,
    pub occurred_at: Option<i64>,
    pub manager_id: Option<String>,
    pub team: Option<String>,
    pub source: Option<String>,
}

impl Header {
    /// Validates the common fields and joins them with a validated body.
    pub(crate) fn check(self) -> Result<CheckedHeader> {
        let event_id = required_id("event_id", self.event_id)?;
        let occurred_at_ms = required_time("occurred_at", self.occurred_at)?;
        let manager_id = manager_id(self.manager_id)?;
        let team = label("team", self.team)?;
        let source = label("source", self.source)?;
        Ok(CheckedHeader { event_id, occurred_at_ms, manager_id, team, source })
    }
}

/// Validated common fields, waiting for their body.
pub(crate) struct CheckedHeader {
    event_id: String,
    occurred_at_ms: i64,
    manager_id: String,
    team: Option<String>,
    source: Option<String>,
}

impl CheckedHeader {
    pub(crate) fn with_body(self, body: EventBody) -> Event {
        Event {
            event_id: self.event_id,
            occurred_at_ms: self.occurred_at_ms,
            manager_id: self.manager_id,
            team: self.team,
            source: self.source,
            body,
        }
    }
}

/// A call's fields, as decoded.
pub(crate) struct CallIn {
    pub call_id: Option<String>,
    pub direction: Option<CallDirection>,
    pub status: Option<CallStatus>,
    pub started_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub talk_seconds: Option<f64>,
    pub client_id: Option<String>,
    pub card_id: Option<String>,
}

impl CallIn {
    pub(crate) fn check(self) -> Result<Call> {
        let call_id = required_id("call_id", self.call_id)?;
        let direction = self.direction.ok_or(DecodeError::missing("direction"))?;
        let status = self.status.ok_or(DecodeError::missing("status"))?;
        let started_at_ms = required_time("started_at", self.started_at)?;
        let ended_at_ms = required_time("ended_at", self.ended_at)?;
        let answered_at_ms = optional_time("answered_at", self.answered_at)?;
        if ended_at_ms < started_at_ms {
            return Err(DecodeError::invalid("ended_at", "before started_at"));
        }
        if let Some(answered) = answered_at_ms {
            if !(started_at_ms..=ended_at_ms).contains(&answered) {
                return Err(DecodeError::invalid("answered_at", "outside started_at..=ended_at"));
            }
        }
        let talk_ms = match self.talk_seconds {
            Some(secs) => {
                if !secs.is_finite() || !(0.0..=MAX_TALK_SECONDS).contains(&secs) {
                    return Err(DecodeError::invalid("talk_seconds", "not within 0..=86400"));
                }
                // In range by the check above, so the cast neither saturates nor wraps.
                (secs * 1000.0).round() as u64
            }
            None => match (status, answered_at_ms) {
                // Both times were checked: ended >= answered, and the difference fits. The
                // derived talk time has the bound of a given one (found by fuzzing: without it,
                // a call answered months before it ended counted months of talk).
                (CallStatus::Answered, Some(answered)) => {
                    let talk_ms = (ended_at_ms - answered) as u64;
                    if talk_ms > (MAX_TALK_SECONDS as u64) * 1000 {
                        return Err(DecodeError::invalid("answered_at", "more than 86400 s before ended_at"));
                    }
                    talk_ms
                }
                _ => 0,
            },
        };
        Ok(Call {
            call_id,
            direction,
            status,
            started_at_ms,
            answered_at_ms,
            ended_at_ms,
            talk_ms,
            client_id: optional_id("client_id", self.client_id)?,
            card_id: optional_id("card_id", self.card_id)?,
        })
    }
}

/// A message's fields, as decoded.
pub(crate) struct MessageIn {
    pub message_id: Option<String>,
    pub dialog_id: Option<String>,
    pub channel: Option<String>,
    pub direction: Option<MessageDirection>,
    pub client_id: Option<String>,
    pub new_dialog: Option<bool>,
}

impl MessageIn {
    pub(crate) fn check(self) -> Result<Message> {
        Ok(Message {
            message_id: required_id("message_id", self.message_id)?,
            dialog_id: required_id("dialog_id", self.dialog_id)?,
            channel: channel(self.channel)?,
            direction: self.direction.ok_or(DecodeError::missing("direction"))?,
            client_id: optional_id("client_id", self.client_id)?,
            new_dialog: self.new_dialog,
        })
    }
}

/// A card change's fields, as decoded.
pub(crate) struct CardChangeIn {
    pub card_id: Option<String>,
    pub card_type: Option<CardType>,
    pub change: Option<CardChangeKind>,
    pub pipeline: Option<String>,
    pub stage_from: Option<String>,
    pub stage_to: Option<String>,
    pub stage_progress_pct: Option<f64>,
    pub comment_length: Option<u32>,
    pub task_id: Option<String>,
    pub task_due_at: Option<i64>,
    pub task_due_from: Option<i64>,
    pub amount: Option<f64>,
    pub client_id: Option<String>,
    pub margin: Option<f64>,
    pub invoice_id: Option<String>,
    pub currency: Option<String>,
}

impl CardChangeIn {
    pub(crate) fn check(self) -> Result<CardChange> {
        let card_id = required_id("card_id", self.card_id)?;
        let card_type = self.card_type.ok_or(DecodeError::missing("card_type"))?;
        let change = self.change.ok_or(DecodeError::missing("change"))?;
        if let Some(pct) = self.stage_progress_pct {
            if !(0.0..=100.0).contains(&pct) {
                return Err(DecodeError::invalid("stage_progress_pct", "not within 0..=100"));
            }
        }
        if let Some(amount) = self.amount {
            if !amount.is_finite() {
                return Err(DecodeError::invalid("amount", "not a finite number"));
            }
        }
        if let Some(margin) = self.margin {
            if !margin.is_finite() {
                return Err(DecodeError::invalid("margin", "not a finite number"));
            }
        }
        Ok(CardChange {
            card_id,
            card_type,
            change,
            pipeline: optional_id("pipeline", self.pipeline)?,
            stage_from: optional_id("stage_from", self.stage_from)?,
            stage_to: optional_id("stage_to", self.stage_to)?,
            stage_progress_pct: self.stage_progress_pct,
            comment_length: self.comment_length,
            task_id: optional_id("task_id", self.task_id)?,
            task_due_at_ms: optional_time("task_due_at", self.task_due_at)?,
            task_due_from_ms: optional_time("task_due_from", self.task_due_from)?,
            amount: self.amount,
            client_id: optional_id("client_id", self.client_id)?,
            margin: self.margin,
            invoice_id: optional_id("invoice_id", self.invoice_id)?,
            currency: currency(self.currency)?,
        })
    }
}

fn required_id(field: &'static str, value: Option<String>) -> Result<String> {
    match value {
        None => Err(DecodeError::missing(field)),
        Some(s) if s.is_empty() => Err(DecodeError::missing(field)),
        Some(s) if s.len() > MAX_ID_BYTES => Err(DecodeError::invalid(field, "longer than 256 bytes")),
        Some(s) => Ok(s),
    }
}

/// An optional free string: empty counts as absent; at most 256 bytes.
fn optional_id(field: &'static str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.len() > MAX_ID_BYTES => Err(DecodeError::invalid(field, "longer than 256 bytes")),
        other => Ok(other),
    }
}

/// An optional string that may become a metric label: empty counts as absent; at most 128 bytes;
/// no control characters.
fn label(field: &'static str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.len() > MAX_LABEL_BYTES => Err(DecodeError::invalid(field, "longer than 128 bytes")),
        Some(s) if s.chars().any(char::is_control) => Err(DecodeError::invalid(field, "contains a control character")),
        other => Ok(other),
    }
}

fn manager_id(value: Option<String>) -> Result<String> {
    let s = match value {
        // Blank is missing too: a label of spaces names nobody.
        Some(s) if !s.trim().is_empty() => s,
        _ => return Err(DecodeError::missing("manager_id")),
    };
    if s.len() > MAX_MANAGER_ID_BYTES {
        return Err(DecodeError::InvalidManagerId { detail: "longer than 128 bytes" });
    }
    if s.chars().any(char::is_control) {
        return Err(DecodeError::InvalidManagerId { detail: "contains a control character" });
    }
    if is_phone_like(&s) {
        return Err(DecodeError::InvalidManagerId { detail: "looks like a phone number" });
    }
    Ok(s)
}

/// Whether `s`, once `+`, `-`, `(`, `)` and spaces are removed, is all ASCII digits and at least
/// ten of them.
pub(crate) fn is_phone_like(s: &str) -> bool {
    let mut digits = 0usize;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'+' | b' ' | b'-' | b'(' | b')' => {}
            _ => return false,
        }
    }
    digits >= PHONE_MIN_DIGITS
}

/// Trims and lower-cases a channel; it must then be 1..=64 bytes of `[a-z0-9_.-]`.
fn channel(value: Option<String>) -> Result<String> {
    let s = match value {
        Some(s) if !s.is_empty() => s,
        _ => return Err(DecodeError::missing("channel")),
    };
    let trimmed = s.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_CHANNEL_BYTES {
        return Err(DecodeError::invalid("channel", "not 1..=64 bytes"));
    }
    let mut normal = true;
    for b in trimmed.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {}
            b'A'..=b'Z' => normal = false,
            _ => return Err(DecodeError::invalid("channel", "not of [a-z0-9_.-]")),
        }
    }
    if normal && trimmed.len() == s.len() {
        Ok(s)
    } else {
        Ok(trimmed.to_ascii_lowercase())
    }
}

/// An optional currency code: empty counts as absent; else 3 ASCII letters (ISO 4217), upper-cased.
fn currency(value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => Ok(Some(s.to_ascii_uppercase())),
        Some(_) => Err(DecodeError::invalid("currency", "not a 3-letter ISO 4217 code")),
        None => Ok(None),
    }
}

fn required_time(field: &'static str, value: Option<i64>) -> Result<i64> {
    let ms = value.ok_or(DecodeError::missing(field))?;
    check_range(field, ms)
}

fn optional_time(field: &'static str, value: Option<i64>) -> Result<Option<i64>> {
    value.map(|ms| check_range(field, ms)).transpose()
}

fn check_range(field: &'static str, ms: i64) -> Result<i64> {
    if time::in_range(ms) {
        Ok(ms)
    } else {
        Err(DecodeError::invalid(field, "not within years 2000..2100"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_like() {
        let cases = [
            ("+7 (916) 123-45-67", true),
            ("79161234567", true),
            ("1234567890", true),
            ("123456789", false),
            ("+1 (555) 010-99", false),
            ("+1 (555) 010-999", true),
            ("mgr-1234567890", false),
            ("12345678901234567890x", false),
            ("alice", false),
            ("1234 5678 90", true),
            ("", false),
        ];
        for (input, expected) in cases {
            assert_eq!(is_phone_like(input), expected, "{input}");
        }
    }

    #[test]
    fn channels() {
        let cases: [(&str, std::result::Result<&str, DecodeError>); 8] = [
            ("whatsapp", Ok("whatsapp")),
            ("  WhatsApp ", Ok("whatsapp")),
            ("tg.bot_2-x", Ok("tg.bot_2-x")),
            ("", Err(DecodeError::missing("channel"))),
            ("   ", Err(DecodeError::invalid("channel", "not 1..=64 bytes"))),
            ("we chat", Err(DecodeError::invalid("channel", "not of [a-z0-9_.-]"))),
            ("вконтакте", Err(DecodeError::invalid("channel", "not of [a-z0-9_.-]"))),
            (&"x".repeat(65), Err(DecodeError::invalid("channel", "not 1..=64 bytes"))),
        ];
        for (input, expected) in cases {
            assert_eq!(channel(Some(input.to_owned())), expected.map(str::to_owned), "{input:?}");
        }
    }

    #[test]
    fn kind_resolution() {
        use Kind::*;
        let cases = [
            (Some(Call), None, Ok(Some(Call))),
            (Some(Call), Some(Call), Ok(Some(Call))),
            (None, Some(Message), Ok(Some(Message))),
            (None, None, Ok(None)),
            (Some(Call), Some(CardChange), Err(DecodeError::KindMismatch { expected: CardChange, actual: Call })),
        ];
        for (declared, expected, result) in cases {
            assert_eq!(resolve_kind(declared, expected), result);
        }
    }
}
