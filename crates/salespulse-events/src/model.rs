//! The canonical, validated event model that both encodings decode into.

/// Declares a fieldless enum with its snake_case wire spelling, `ALL`, `as_str`, `index` and a
/// case-insensitive `parse`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order (`ALL[v.index()] == v`).
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The JSON spelling (snake_case), also used as a metric label value.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }

            /// Position in [`Self::ALL`], for array-indexed counters.
            pub const fn index(&self) -> usize {
                *self as usize
            }

            /// Parses the JSON spelling, ASCII case-insensitively; `None` for anything else.
            pub fn parse(value: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(value))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Which of the three event kinds an event is; the JSON `kind` field.
    pub enum Kind {
        /// A finished phone call ([`Call`]).
        Call => "call",
        /// A chat message through a messenger gateway ([`Message`]).
        Message => "message",
        /// A change of a CRM card ([`CardChange`]).
        CardChange => "card_change",
    }
}

wire_enum! {
    /// Who started a call.
    pub enum CallDirection {
        /// The client called the manager.
        Inbound => "inbound",
        /// The manager called the client.
        Outbound => "outbound",
    }
}

wire_enum! {
    /// How a call ended.
    pub enum CallStatus {
        /// The call was picked up and a conversation took place.
        Answered => "answered",
        /// An inbound call nobody picked up.
        Missed => "missed",
        /// The other side was busy.
        Busy => "busy",
        /// The call failed technically.
        Failed => "failed",
        /// An outbound call the client did not pick up.
        NoAnswer => "no_answer",
    }
}

wire_enum! {
    /// Who sent a message.
    pub enum MessageDirection {
        /// From the client.
        Inbound => "inbound",
        /// From the manager.
        Outbound => "outbound",
    }
}

wire_enum! {
    /// The type of a CRM card.
    pub enum CardType {
        /// A deal.
        Deal => "deal",
        /// A lead.
        Lead => "lead",
        /// A contact.
        Contact => "contact",
        /// A company.
        Company => "company",
        /// A task.
        Task => "task",
    }
}

wire_enum! {
    /// What happened to a CRM card.
    pub enum CardChangeKind {
        /// The card was created.
        Created => "created",
        /// Some field of the card was updated.
        Updated => "updated",
        /// The card moved between pipeline stages.
        StageChanged => "stage_changed",
        /// A comment was added (only its length is part of the contract).
        CommentAdded => "comment_added",
        /// A task was created on the card.
        TaskCreated => "task_created",
        /// A task was completed.
        TaskCompleted => "task_completed",
        /// A task's due time was moved.
        TaskRescheduled => "task_rescheduled",
        /// The deal was won.
        Won => "won",
        /// The deal was lost.
        Lost => "lost",
        /// The card's responsible manager changed.
        ResponsibleChanged => "responsible_changed",
        /// A meeting with the client was scheduled on the card.
        MeetingScheduled => "meeting_scheduled",
        /// A meeting with the client took place.
        MeetingHeld => "meeting_held",
        /// An invoice was issued (`invoice_id`, `amount`).
        InvoiceIssued => "invoice_issued",
        /// A payment was received; it settles its invoice (`invoice_id`, `amount`).
        PaymentReceived => "payment_received",
    }
}

/// One decoded, validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique per logical event; retries resend the same id (used for de-duplication).
    pub event_id: String,
    /// Event time, epoch milliseconds UTC.
    pub occurred_at_ms: i64,
    /// The manager the event is attributed to; safe to use as a metric label.
    pub manager_id: String,
    /// The manager's team, if the producer knows it.
    pub team: Option<String>,
    /// The system that produced the event (a PBX, a messenger gateway, a CRM).
    pub source: Option<String>,
    /// The kind-specific part.
    pub body: EventBody,
}

impl Event {
    /// The kind of [`Event::body`].
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }
}

/// The kind-specific part of an [`Event`].
#[derive(Clone, Debug, PartialEq)]
pub enum EventBody {
    /// A finished call.
    Call(Call),
    /// A chat message.
    Message(Message),
    /// A change of a CRM card.
    CardChange(CardChange),
}

impl EventBody {
    /// The kind of this body.
    pub fn kind(&self) -> Kind {
        match self {
            EventBody::Call(_) => Kind::Call,
            EventBody::Message(_) => Kind::Message,
            EventBody::CardChange(_) => Kind::CardChange,
        }
    }
}

/// One finished call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The PBX's id of the call.
    pub call_id: String,
    /// Who started the call.
    pub direction: CallDirection,
    /// How the call ended.
    pub status: CallStatus,
    /// When the call started ringing, epoch milliseconds UTC.
    pub started_at_ms: i64,
    /// When the call was picked up, if it was; within `started_at_ms..=ended_at_ms`.
    pub answered_at_ms: Option<i64>,
    /// When the call ended, epoch milliseconds UTC; never before `started_at_ms`.
    pub ended_at_ms: i64,
    /// Talk time in whole milliseconds, resolved: `talk_seconds` when given (rounded to the nearest ms), else ended_at - answered_at, else 0.
    pub talk_ms: u64,
    /// The client's id in the producer's system; never used as a metric label.
    pub client_id: Option<String>,
    /// The CRM card the call is attached to, if any.
    pub card_id: Option<String>,
}

/// One chat message. The text is never part of the contract.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The gateway's id of the message.
    pub message_id: String,
    /// The dialog (conversation) the message belongs to.
    pub dialog_id: String,
    /// The messenger, lower-cased: `whatsapp`, `telegram`, `viber`, ...
    pub channel: String,
    /// Who sent the message.
    pub direction: MessageDirection,
    /// The client's id in the producer's system; never used as a metric label.
    pub client_id: Option<String>,
    /// Whether this message opened a new dialog, if the producer knows.
    pub new_dialog: Option<bool>,
}

/// One change of a CRM card.
#[derive(Clone, Debug, PartialEq)]
pub struct CardChange {
    /// The CRM's id of the card.
    pub card_id: String,
    /// The type of the card.
    pub card_type: CardType,
    /// What happened.
    pub change: CardChangeKind,
    /// The pipeline the card is in, if any.
    pub pipeline: Option<String>,
    /// For stage changes: the stage left.
    pub stage_from: Option<String>,
    /// For stage changes: the stage entered.
    pub stage_to: Option<String>,
    /// How far along the pipeline the new stage is, 0..=100.
    pub stage_progress_pct: Option<f64>,
    /// For comments: the comment's length in characters (the text itself is never sent).
    pub comment_length: Option<u32>,
    /// For task changes: the task's id.
    pub task_id: Option<String>,
    /// For task changes: the task's (new) due time, epoch milliseconds UTC.
    pub task_due_at_ms: Option<i64>,
    /// For task reschedules: the previous due time, epoch milliseconds UTC.
    pub task_due_from_ms: Option<i64>,
    /// The deal amount (or the invoice's, the payment's), in major units of `currency`.
    pub amount: Option<f64>,
    /// The client's id in the producer's system; never used as a metric label.
    pub client_id: Option<String>,
    /// The deal's (invoice's, payment's) margin, in the same units as `amount`.
    pub margin: Option<f64>,
    /// For invoices and payments: the invoice's id (never a label); absent means the card's one
    /// invoice.
    pub invoice_id: Option<String>,
    /// The ISO 4217 code of `amount` and `margin`, upper-cased; absent means the configured one.
    pub currency: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        as_str: fn(&T) -> &'static str,
        index: fn(&T) -> usize,
        parse: fn(&str) -> Option<T>,
        expected: &[&str],
    ) {
        let spelled: Vec<&str> = all.iter().map(as_str).collect();
        assert_eq!(spelled, expected);
        for (i, v) in all.iter().enumerate() {
            assert_eq!(index(v), i);
            assert_eq!(parse(as_str(v)), Some(*v));
            assert_eq!(parse(&as_str(v).to_ascii_uppercase()), Some(*v));
        }
        assert_eq!(parse(""), None);
        assert_eq!(parse("nope"), None);
    }

    #[test]
    fn wire_spellings() {
        check(&Kind::ALL, Kind::as_str, Kind::index, Kind::parse, &["call", "message", "card_change"]);
        check(
            &CallDirection::ALL,
            CallDirection::as_str,
            CallDirection::index,
            CallDirection::parse,
            &["inbound", "outbound"],
        );
        check(
            &CallStatus::ALL,
            CallStatus::as_str,
            CallStatus::index,
            CallStatus::parse,
            &["answered", "missed", "busy", "failed", "no_answer"],
        );
        check(
            &MessageDirection::ALL,
            MessageDirection::as_str,
            MessageDirection::index,
            MessageDirection::parse,
            &["inbound", "outbound"],
        );
        check(
            &CardType::ALL,
            CardType::as_str,
            CardType::index,
            CardType::parse,
            &["deal", "lead", "contact", "company", "task"],
        );
        check(
            &CardChangeKind::ALL,
            CardChangeKind::as_str,
            CardChangeKind::index,
            CardChangeKind::parse,
            &[
                "created",
                "updated",
                "stage_changed",
                "comment_added",
                "task_created",
                "task_completed",
                "task_rescheduled",
                "won",
                "lost",
                "responsible_changed",
                "meeting_scheduled",
                "meeting_held",
                "invoice_issued",
                "payment_received",
            ],
        );
        assert_eq!(Kind::CardChange.to_string(), "card_change");
    }
}
