//! The protobuf encoding: `salespulse.v1.Event` from `proto/salespulse/v1/events.proto`.

use prost::Message as _;

use crate::error::DecodeError;
use crate::model::{
    Call, CallDirection, CallStatus, CardChange, CardChangeKind, CardType, Event, EventBody, Kind, Message,
    MessageDirection,
};
use crate::proto;
use crate::validate::{resolve_kind, CallIn, CardChangeIn, Header, MessageIn};

type Result<T> = std::result::Result<T, DecodeError>;

/// Maps a protobuf enum number to the model: 0 (`UNSPECIFIED`) is absent, an unknown number is
/// invalid.
fn enumeration<P, T>(field: &'static str, value: i32, map: fn(P) -> Option<T>) -> Result<Option<T>>
where
    P: TryFrom<i32>,
{
    match P::try_from(value) {
        Ok(p) => Ok(map(p)),
        Err(_) => Err(DecodeError::invalid(field, "unknown enum number")),
    }
}

/// A required time: 0 (the protobuf default) is absent.
fn required_time(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

fn call_direction(p: proto::CallDirection) -> Option<CallDirection> {
    match p {
        proto::CallDirection::Unspecified => None,
        proto::CallDirection::Inbound => Some(CallDirection::Inbound),
        proto::CallDirection::Outbound => Some(CallDirection::Outbound),
    }
}

fn call_status(p: proto::CallStatus) -> Option<CallStatus> {
    match p {
        proto::CallStatus::Unspecified => None,
        proto::CallStatus::Answered => Some(CallStatus::Answered),
        proto::CallStatus::Missed => Some(CallStatus::Missed),
        proto::CallStatus::Busy => Some(CallStatus::Busy),
        proto::CallStatus::Failed => Some(CallStatus::Failed),
        proto::CallStatus::NoAnswer => Some(CallStatus::NoAnswer),
    }
}

fn message_direction(p: proto::MessageDirection) -> Option<MessageDirection> {
    match p {
        proto::MessageDirection::Unspecified => None,
        proto::MessageDirection::Inbound => Some(MessageDirection::Inbound),
        proto::MessageDirection::Outbound => Some(MessageDirection::Outbound),
    }
}

fn card_type(p: proto::CardType) -> Option<CardType> {
    match p {
        proto::CardType::Unspecified => None,
        proto::CardType::Deal => Some(CardType::Deal),
        proto::CardType::Lead => Some(CardType::Lead),
        proto::CardType::Contact => Some(CardType::Contact),
        proto::CardType::Company => Some(CardType::Company),
        proto::CardType::Task => Some(CardType::Task),
    }
}

fn card_change_kind(p: proto::CardChangeKind) -> Option<CardChangeKind> {
    use proto::CardChangeKind as P;
    match p {
        P::Unspecified => None,
        P::Created => Some(CardChangeKind::Created),
        P::Updated => Some(CardChangeKind::Updated),
        P::StageChanged => Some(CardChangeKind::StageChanged),
        P::CommentAdded => Some(CardChangeKind::CommentAdded),
        P::TaskCreated => Some(CardChangeKind::TaskCreated),
        P::TaskCompleted => Some(CardChangeKind::TaskCompleted),
        P::TaskRescheduled => Some(CardChangeKind::TaskRescheduled),
        P::Won => Some(CardChangeKind::Won),
        P::Lost => Some(CardChangeKind::Lost),
        P::ResponsibleChanged => Some(CardChangeKind::ResponsibleChanged),
        P::MeetingScheduled => Some(CardChangeKind::MeetingScheduled),
        P::MeetingHeld => Some(CardChangeKind::MeetingHeld),
        P::InvoiceIssued => Some(CardChangeKind::InvoiceIssued),
        P::PaymentReceived => Some(CardChangeKind::PaymentReceived),
    }
}

/// Decodes one protobuf payload (size already checked).
pub(crate) fn decode(payload: &[u8], expected: Option<Kind>) -> Result<Event> {
    let event = crate::wire::decode(payload).map_err(|e| DecodeError::MalformedProtobuf { detail: e.0 })?;
    from_proto(event, expected)
}

/// Validates a decoded message and maps it to the model.
fn from_proto(event: proto::Event, expected: Option<Kind>) -> Result<Event> {
    let body = event.kind.ok_or(DecodeError::missing("kind"))?;
    let declared = match &body {
        proto::event::Kind::Call(_) => Kind::Call,
        proto::event::Kind::Message(_) => Kind::Message,
        proto::event::Kind::CardChange(_) => Kind::CardChange,
    };
    resolve_kind(Some(declared), expected)?;

    let header = Header {
        event_id: Some(event.event_id),
        occurred_at: required_time(event.occurred_at),
        manager_id: Some(event.manager_id),
        team: event.team,
        source: event.source,
    }
    .check()?;

    let body = match body {
        proto::event::Kind::Call(c) => EventBody::Call(
            CallIn {
                call_id: Some(c.call_id),
                direction: enumeration("direction", c.direction, call_direction)?,
                status: enumeration("status", c.status, call_status)?,
                started_at: required_time(c.started_at),
                answered_at: c.answered_at,
                ended_at: required_time(c.ended_at),
                talk_seconds: c.talk_seconds,
                client_id: c.client_id,
                card_id: c.card_id,
            }
            .check()?,
        ),
        proto::event::Kind::Message(m) => EventBody::Message(
            MessageIn {
                message_id: Some(m.message_id),
                dialog_id: Some(m.dialog_id),
                channel: Some(m.channel),
                direction: enumeration("direction", m.direction, message_direction)?,
                client_id: m.client_id,
                new_dialog: m.new_dialog,
            }
            .check()?,
        ),
        proto::event::Kind::CardChange(c) => EventBody::CardChange(
            CardChangeIn {
                card_id: Some(c.card_id),
                card_type: enumeration("card_type", c.card_type, card_type)?,
                change: enumeration("change", c.change, card_change_kind)?,
                pipeline: c.pipeline,
                stage_from: c.stage_from,
                stage_to: c.stage_to,
                stage_progress_pct: c.stage_progress_pct,
                comment_length: c.comment_length,
                task_id: c.task_id,
                task_due_at: c.task_due_at,
                task_due_from: c.task_due_from,
                amount: c.amount,
                client_id: c.client_id,
                margin: c.margin,
                invoice_id: c.invoice_id,
                currency: c.currency,
            }
            .check()?,
        ),
    };
    Ok(header.with_body(body))
}

/// Encodes `event` as a `salespulse.v1.Event` message. A call's `talk_seconds` is always set (the
/// resolved talk time).
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    to_proto(event).encode_to_vec()
}

/// The protobuf message of `event`.
pub(crate) fn to_proto(event: &Event) -> proto::Event {
    let kind = match &event.body {
        EventBody::Call(c) => proto::event::Kind::Call(call_to_proto(c)),
        EventBody::Message(m) => proto::event::Kind::Message(message_to_proto(m)),
        EventBody::CardChange(c) => proto::event::Kind::CardChange(card_change_to_proto(c)),
    };
    proto::Event {
        event_id: event.event_id.clone(),
        occurred_at: event.occurred_at_ms,
        manager_id: event.manager_id.clone(),
        team: event.team.clone(),
        source: event.source.clone(),
        kind: Some(kind),
    }
}

fn call_to_proto(c: &Call) -> proto::Call {
    let direction = match c.direction {
        CallDirection::Inbound => proto::CallDirection::Inbound,
        CallDirection::Outbound => proto::CallDirection::Outbound,
    };
    let status = match c.status {
        CallStatus::Answered => proto::CallStatus::Answered,
        CallStatus::Missed => proto::CallStatus::Missed,
        CallStatus::Busy => proto::CallStatus::Busy,
        CallStatus::Failed => proto::CallStatus::Failed,
        CallStatus::NoAnswer => proto::CallStatus::NoAnswer,
    };
    proto::Call {
        call_id: c.call_id.clone(),
        direction: direction.into(),
        status: status.into(),
        started_at: c.started_at_ms,
        answered_at: c.answered_at_ms,
        ended_at: c.ended_at_ms,
        talk_seconds: Some(c.talk_ms as f64 / 1000.0),
        client_id: c.client_id.clone(),
        card_id: c.card_id.clone(),
    }
}

fn message_to_proto(m: &Message) -> proto::Message {
    let direction = match m.direction {
        MessageDirection::Inbound => proto::MessageDirection::Inbound,
        MessageDirection::Outbound => proto::MessageDirection::Outbound,
    };
    proto::Message {
        message_id: m.message_id.clone(),
        dialog_id: m.dialog_id.clone(),
        channel: m.channel.clone(),
        direction: direction.into(),
        client_id: m.client_id.clone(),
        new_dialog: m.new_dialog,
    }
}

fn card_change_to_proto(c: &CardChange) -> proto::CardChange {
    use proto::CardChangeKind as P;
    let card_type = match c.card_type {
        CardType::Deal => proto::CardType::Deal,
        CardType::Lead => proto::CardType::Lead,
        CardType::Contact => proto::CardType::Contact,
        CardType::Company => proto::CardType::Company,
        CardType::Task => proto::CardType::Task,
    };
    let change = match c.change {
        CardChangeKind::Created => P::Created,
        CardChangeKind::Updated => P::Updated,
        CardChangeKind::StageChanged => P::StageChanged,
        CardChangeKind::CommentAdded => P::CommentAdded,
        CardChangeKind::TaskCreated => P::TaskCreated,
        CardChangeKind::TaskCompleted => P::TaskCompleted,
        CardChangeKind::TaskRescheduled => P::TaskRescheduled,
        CardChangeKind::Won => P::Won,
        CardChangeKind::Lost => P::Lost,
        CardChangeKind::ResponsibleChanged => P::ResponsibleChanged,
        CardChangeKind::MeetingScheduled => P::MeetingScheduled,
        CardChangeKind::MeetingHeld => P::MeetingHeld,
        CardChangeKind::InvoiceIssued => P::InvoiceIssued,
        CardChangeKind::PaymentReceived => P::PaymentReceived,
    };
    proto::CardChange {
        card_id: c.card_id.clone(),
        card_type: card_type.into(),
        change: change.into(),
        pipeline: c.pipeline.clone(),
        stage_from: c.stage_from.clone(),
        stage_to: c.stage_to.clone(),
        stage_progress_pct: c.stage_progress_pct,
        comment_length: c.comment_length,
        task_id: c.task_id.clone(),
        task_due_at: c.task_due_at_ms,
        task_due_from: c.task_due_from_ms,
        amount: c.amount,
        client_id: c.client_id.clone(),
        margin: c.margin,
        invoice_id: c.invoice_id.clone(),
        currency: c.currency.clone(),
    }
}
