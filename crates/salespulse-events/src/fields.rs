//! The contract's fields as typed values, and the one place where a set of them becomes a
//! validated [`Event`]. The JSON decoder parses a payload into [`EventFields`] and calls
//! [`EventFields::into_event`]; code that already holds typed values (the source mappings of
//! `salespulse-sources`) fills [`EventFields`] directly and skips writing and re-parsing JSON. Both
//! paths therefore accept and reject exactly the same events, with the same errors: an
//! [`EventFields`] is what a JSON object of those keys and values decodes to.

use std::borrow::Cow;

use crate::error::DecodeError;
use crate::model::{CallDirection, CallStatus, CardChangeKind, CardType, Event, EventBody, Kind, MessageDirection};
use crate::time;
use crate::validate::{resolve_kind, CallIn, CardChangeIn, Header, MessageIn};

type Result<T> = std::result::Result<T, DecodeError>;

/// A value given for one field, typed as a JSON value is: what `"text"`, `-3`, `7`, `1.5`,
/// `true` and `null` decode to. The field's own rules (a time as integer epoch milliseconds or an
/// RFC 3339 string, a count as a non-negative integer, ...) are checked by
/// [`EventFields::into_event`], not here.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// `null`: the same as leaving the field out.
    Null,
    /// A string.
    Str(Cow<'a, str>),
    /// A negative integer (a non-negative one is [`FieldValue::Uint`], as JSON reads it).
    Int(i64),
    /// A non-negative integer.
    Uint(u64),
    /// A number with a fraction or exponent, or one beyond the 64-bit integers.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl<'a> From<FieldValue<'a>> for Scalar<'a> {
    fn from(value: FieldValue<'a>) -> Scalar<'a> {
        match value {
            FieldValue::Null => Scalar::Null,
            FieldValue::Str(s) => Scalar::Str(s),
            FieldValue::Int(v) => Scalar::I64(v),
            FieldValue::Uint(v) => Scalar::U64(v),
            FieldValue::Float(v) => Scalar::F64(v),
            FieldValue::Bool(v) => Scalar::Bool(v),
        }
    }
}

/// One JSON value as far as the contract cares: scalars are kept, arrays and objects are skipped.
#[derive(Debug, Default)]
pub(crate) enum Scalar<'a> {
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

/// Declares the contract's fields: the enum [`Field`], their count, their names and the lookup
/// from a JSON key.
macro_rules! fields {
    ($($variant:ident => $name:literal,)+) => {
        /// One field of the event contract (`docs/events.md`), named as its JSON key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Field {
            $($variant,)+
        }

        pub(crate) const FIELD_COUNT: usize = [$(Field::$variant),+].len();

        impl Field {
            /// Every field, in contract order.
            pub const ALL: [Field; FIELD_COUNT] = [$(Field::$variant),+];

            /// The JSON key (`event_id`, `talk_seconds`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)+
                }
            }

            /// The field a JSON key names, if any (exact, case-sensitive).
            pub fn from_key(key: &str) -> Option<Field> {
                match key {
                    $($name => Some(Field::$variant),)+
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

/// The fields of one event as typed values, one slot per contract field: what a JSON object
/// decodes to before the contract is checked. Fill it with [`EventFields::set`], then
/// [`EventFields::into_event`] validates it exactly as the JSON and protobuf decoders do.
///
/// ```
/// use salespulse_events::{EventFields, Field, FieldValue, Kind};
/// let mut fields = EventFields::new();
/// fields.set(Field::EventId, FieldValue::Str("e-1".into()));
/// fields.set(Field::OccurredAt, FieldValue::Uint(1_714_557_641_000));
/// fields.set(Field::ManagerId, FieldValue::Str("m-17".into()));
/// fields.set(Field::MessageId, FieldValue::Str("w-1".into()));
/// fields.set(Field::DialogId, FieldValue::Str("d-1".into()));
/// fields.set(Field::Channel, FieldValue::Str("WhatsApp".into()));
/// fields.set(Field::Direction, FieldValue::Str("inbound".into()));
/// let event = fields.into_event(Some(Kind::Message)).unwrap();
/// assert_eq!(event.occurred_at_ms, 1_714_557_641_000);
/// ```
#[derive(Debug)]
pub struct EventFields<'a> {
    pub(crate) slots: [Scalar<'a>; FIELD_COUNT],
}

impl Default for EventFields<'_> {
    fn default() -> Self {
        EventFields::new()
    }
}

impl<'a> EventFields<'a> {
    /// No field set.
    pub fn new() -> EventFields<'a> {
        EventFields { slots: [const { Scalar::Absent }; FIELD_COUNT] }
    }

    /// Sets `field`, replacing a value set before. (A JSON object that repeats a key is
    /// malformed; the JSON decoder rejects it before it gets here.)
    pub fn set(&mut self, field: Field, value: FieldValue<'a>) {
        self.slots[field as usize] = value.into();
    }

    /// Whether `field` was given at all (even as `null`).
    pub fn is_set(&self, field: Field) -> bool {
        !matches!(self.slots[field as usize], Scalar::Absent)
    }

    /// Validates the fields as one event. `expected` is the kind the caller requires (a topic's
    /// configured kind), if any; without it and without a `kind` field, exactly one body id
    /// decides the kind. The errors are those of [`crate::decode`] for a JSON object with these
    /// keys and values.
    pub fn into_event(mut self, expected: Option<Kind>) -> Result<Event> {
        let raw = &mut self;
        let declared = match raw.take(Field::Kind) {
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
            event_id: raw.string(Field::EventId)?,
            occurred_at: raw.time(Field::OccurredAt)?,
            manager_id: raw.string(Field::ManagerId)?,
            team: raw.string(Field::Team)?,
            source: raw.string(Field::Source)?,
        }
        .check()?;

        let body = match kind {
            Kind::Call => EventBody::Call(
                CallIn {
                    call_id: raw.string(Field::CallId)?,
                    direction: raw.enumeration(Field::Direction, CallDirection::parse)?,
                    status: raw.enumeration(Field::Status, CallStatus::parse)?,
                    started_at: raw.time(Field::StartedAt)?,
                    answered_at: raw.time(Field::AnsweredAt)?,
                    ended_at: raw.time(Field::EndedAt)?,
                    talk_seconds: raw.number(Field::TalkSeconds)?,
                    client_id: raw.string(Field::ClientId)?,
                    card_id: raw.string(Field::CardId)?,
                }
                .check()?,
            ),
            Kind::Message => EventBody::Message(
                MessageIn {
                    message_id: raw.string(Field::MessageId)?,
                    dialog_id: raw.string(Field::DialogId)?,
                    channel: raw.string(Field::Channel)?,
                    direction: raw.enumeration(Field::Direction, MessageDirection::parse)?,
                    client_id: raw.string(Field::ClientId)?,
                    new_dialog: raw.boolean(Field::NewDialog)?,
                }
                .check()?,
            ),
            Kind::CardChange => EventBody::CardChange(
                CardChangeIn {
                    card_id: raw.string(Field::CardId)?,
                    card_type: raw.enumeration(Field::CardType, CardType::parse)?,
                    change: raw.enumeration(Field::Change, CardChangeKind::parse)?,
                    pipeline: raw.string(Field::Pipeline)?,
                    stage_from: raw.string(Field::StageFrom)?,
                    stage_to: raw.string(Field::StageTo)?,
                    stage_progress_pct: raw.number(Field::StageProgressPct)?,
                    comment_length: raw.uint32(Field::CommentLength)?,
                    task_id: raw.string(Field::TaskId)?,
                    task_due_at: raw.time(Field::TaskDueAt)?,
                    task_due_from: raw.time(Field::TaskDueFrom)?,
                    amount: raw.number(Field::Amount)?,
                    client_id: raw.string(Field::ClientId)?,
                    margin: raw.number(Field::Margin)?,
                    invoice_id: raw.string(Field::InvoiceId)?,
                    currency: raw.string(Field::Currency)?,
                }
                .check()?,
            ),
        };
        Ok(header.with_body(body))
    }
}

impl<'a> EventFields<'a> {
    fn take(&mut self, f: Field) -> Scalar<'a> {
        std::mem::take(&mut self.slots[f as usize])
    }

    fn present(&self, f: Field) -> bool {
        !matches!(self.slots[f as usize], Scalar::Absent | Scalar::Null)
    }

    fn string(&mut self, f: Field) -> Result<Option<String>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Str(Cow::Borrowed(s)) => Ok(Some(crate::wire::pooled(s))),
            Scalar::Str(Cow::Owned(s)) => Ok(Some(s)),
            _ => Err(DecodeError::invalid(f.name(), "expected a string")),
        }
    }

    fn time(&mut self, f: Field) -> Result<Option<i64>> {
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

    fn number(&mut self, f: Field) -> Result<Option<f64>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::F64(v) => Ok(Some(v)),
            Scalar::I64(v) => Ok(Some(v as f64)),
            Scalar::U64(v) => Ok(Some(v as f64)),
            _ => Err(DecodeError::invalid(f.name(), "expected a number")),
        }
    }

    fn uint32(&mut self, f: Field) -> Result<Option<u32>> {
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

    fn boolean(&mut self, f: Field) -> Result<Option<bool>> {
        match self.take(f) {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Bool(v) => Ok(Some(v)),
            _ => Err(DecodeError::invalid(f.name(), "expected true or false")),
        }
    }

    /// An enum spelled as its snake_case string; an empty string counts as absent.
    fn enumeration<T>(&mut self, f: Field, parse: fn(&str) -> Option<T>) -> Result<Option<T>> {
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
        let call = self.present(Field::CallId);
        let message = self.present(Field::MessageId);
        let card = self.present(Field::CardId);
        match (call, message, card) {
            (true, false, _) => Ok(Kind::Call),
            (false, true, false) => Ok(Kind::Message),
            (false, false, true) => Ok(Kind::CardChange),
            _ => Err(DecodeError::missing("kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Encoding;
    use proptest::prelude::*;

    /// The JSON object a set of typed values stands for.
    fn to_json(values: &[(Field, FieldValue<'static>)]) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        for (field, value) in values {
            let json = match value {
                FieldValue::Null => serde_json::Value::Null,
                FieldValue::Str(s) => serde_json::Value::String(s.to_string()),
                FieldValue::Int(v) => (*v).into(),
                FieldValue::Uint(v) => (*v).into(),
                FieldValue::Float(v) => serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into),
                FieldValue::Bool(v) => (*v).into(),
            };
            object.insert(field.name().to_owned(), json);
        }
        serde_json::to_vec(&object).unwrap()
    }

    fn typed(values: &[(Field, FieldValue<'static>)], expected: Option<Kind>) -> Result<Event> {
        let mut fields = EventFields::new();
        for (field, value) in values {
            fields.set(*field, value.clone());
        }
        fields.into_event(expected)
    }

    fn s(text: &str) -> FieldValue<'static> {
        FieldValue::Str(Cow::Owned(text.to_owned()))
    }

    /// Valid field sets of each kind, to mutate.
    fn bases() -> Vec<Vec<(Field, FieldValue<'static>)>> {
        use Field as F;
        let common = || {
            vec![
                (F::EventId, s("e-1")),
                (F::OccurredAt, FieldValue::Uint(1_714_557_641_000)),
                (F::ManagerId, s("m-17")),
                (F::Source, s("twilio")),
            ]
        };
        let mut call = common();
        call.extend([
            (F::CallId, s("c-1")),
            (F::Direction, s("inbound")),
            (F::Status, s("answered")),
            (F::StartedAt, FieldValue::Uint(1_714_557_590_000)),
            (F::AnsweredAt, FieldValue::Uint(1_714_557_595_000)),
            (F::EndedAt, FieldValue::Uint(1_714_557_641_000)),
            (F::TalkSeconds, FieldValue::Uint(46)),
        ]);
        let mut message = common();
        message.extend([
            (F::MessageId, s("w-1")),
            (F::DialogId, s("d-1")),
            (F::Channel, s("WhatsApp")),
            (F::Direction, s("outbound")),
            (F::NewDialog, FieldValue::Bool(true)),
        ]);
        let mut card = common();
        card.extend([
            (F::CardId, s("deal-1")),
            (F::CardType, s("deal")),
            (F::Change, s("stage_changed")),
            (F::StageFrom, s("new")),
            (F::StageTo, s("offer")),
            (F::StageProgressPct, FieldValue::Float(40.5)),
            (F::CommentLength, FieldValue::Uint(12)),
            (F::TaskDueAt, FieldValue::Uint(1_714_600_000_000)),
            (F::Amount, FieldValue::Float(1500.25)),
            (F::Currency, s("rub")),
        ]);
        vec![call, message, card]
    }

    /// Values of every JSON type, valid for some fields and not for others.
    fn value() -> impl Strategy<Value = FieldValue<'static>> {
        prop_oneof![
            Just(FieldValue::Null),
            prop::sample::select(vec![
                "",
                " ",
                "x",
                "call",
                "message",
                "card_change",
                "inbound",
                "outbound",
                "missed",
                "no_answer",
                "lead",
                "won",
                "whatsapp",
                " Telegram ",
                "we chat",
                "2024-05-01T13:00:41+03:00",
                "1999-01-01T00:00:00Z",
                "not a time",
                "+7 (916) 123-45-67",
                "RUB",
                "ru",
                "m\u{1}",
            ])
            .prop_map(s),
            Just(s(&"x".repeat(300))),
            prop::sample::select(vec![0u64, 7, 86_401, 1_714_557_600_000, 1_714_557_700_000, 4_294_967_296, u64::MAX])
                .prop_map(FieldValue::Uint),
            prop::sample::select(vec![-1i64, -1_714_557_600_000]).prop_map(FieldValue::Int),
            prop::sample::select(vec![0.5, 41.5, 100.5, -2.0, 1e20]).prop_map(FieldValue::Float),
            any::<bool>().prop_map(FieldValue::Bool),
        ]
    }

    proptest! {
        // The typed path and the JSON decoder accept the same events and reject with the same
        // errors: a mutated valid event, with any expected kind.
        #[test]
        fn typed_fields_decode_as_their_json_does(
            base in 0usize..3,
            mutations in proptest::collection::vec((0usize..FIELD_COUNT, proptest::option::of(value())), 0..4),
            expected in proptest::option::of(prop::sample::select(vec![Kind::Call, Kind::Message, Kind::CardChange])),
        ) {
            let mut values = bases().swap_remove(base);
            for (index, value) in mutations {
                let field = Field::ALL[index];
                values.retain(|(f, _)| *f != field);
                if let Some(value) = value {
                    values.push((field, value));
                }
            }
            let from_json = crate::decode(&to_json(&values), Encoding::Json, expected);
            prop_assert_eq!(typed(&values, expected), from_json);
        }
    }

    #[test]
    fn typed_fields_reject_as_json_does() {
        // A few rejections by name, so a change in either path shows here too.
        let mut values = bases().swap_remove(0);
        values.push((Field::TalkSeconds, FieldValue::Float(1e20)));
        values.retain(|(f, v)| *f != Field::TalkSeconds || *v == FieldValue::Float(1e20));
        let error = typed(&values, None).unwrap_err();
        assert_eq!(error, DecodeError::invalid("talk_seconds", "not within 0..=86400"));
        assert_eq!(crate::decode(&to_json(&values), Encoding::Json, None), Err(error));
        let mut values = bases().swap_remove(1);
        values.push((Field::Kind, s("call")));
        let error = typed(&values, Some(Kind::Message)).unwrap_err();
        assert_eq!(error, DecodeError::KindMismatch { expected: Kind::Message, actual: Kind::Call });
        assert_eq!(EventFields::new().into_event(None), Err(DecodeError::missing("kind")));
        assert!(Field::ALL.iter().all(|f| Field::from_key(f.name()) == Some(*f)));
    }
}
