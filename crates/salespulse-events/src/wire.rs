//! A hand-written reader of the protobuf wire format for `salespulse.v1.Event`, filling the same
//! prost-generated [`proto::Event`] that `prost::Message::decode` would, with its strings taken from
//! a per-thread pool of buffers that [`recycle`] refills from applied events.
//!
//! Why not prost's decoder: it allocates every string field of every record (about seven per
//! event), and decoding is about a fifth of the apply threads' time; reusing the buffers, and a
//! reader made for this one message, take 17 % fewer instructions per decode (callgrind, see
//! docs/performance.md). prost stays the reference: property tests check that both readers give
//! equal messages, or both fail, for arbitrary messages, their concatenations and corruptions, and
//! arbitrary bytes.
//!
//! The semantics are protobuf's: fields in any order; the last value of a scalar or string field
//! wins; a sub-message field that occurs more than once is merged; a `oneof` member replaces
//! another member; unknown fields (groups included) are skipped; a known field with the wrong
//! wire type, a truncated value, an over-long varint and a string that is not UTF-8 are errors.

use std::cell::RefCell;

use crate::model::{Event, EventBody};
use crate::proto;
use crate::proto::event::Kind;

/// Strings kept per thread for reuse, at most.
const POOL_STRINGS: usize = 64;
/// Strings with more capacity than this are not kept (a huge id would otherwise stay around).
const POOL_MAX_CAPACITY: usize = 512;
/// Nesting of groups at most (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

thread_local! {
    static POOL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Why a payload is not a valid `salespulse.v1.Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

type Result<T> = std::result::Result<T, WireError>;

fn error(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

/// Decodes one `salespulse.v1.Event`.
pub(crate) fn decode(payload: &[u8]) -> Result<proto::Event> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let mut reader = Reader { buf: payload, pool: &mut pool };
        let mut event = proto::Event::default();
        reader.event(&mut event)?;
        Ok(event)
    })
}

/// `text` in a string from this thread's pool.
pub(crate) fn pooled(text: &str) -> String {
    let mut s = POOL.with(|pool| pool.try_borrow_mut().ok().and_then(|mut pool| pool.pop())).unwrap_or_default();
    s.clear();
    s.push_str(text);
    s
}

/// Gives the strings of an event that is done with back to this thread's pool.
pub(crate) fn recycle(event: Event) {
    POOL.with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else { return };
        let mut keep = |s: String| {
            if pool.len() < POOL_STRINGS && (1..=POOL_MAX_CAPACITY).contains(&s.capacity()) {
                pool.push(s);
            }
        };
        keep(event.event_id);
        keep(event.manager_id);
        event.team.into_iter().chain(event.source).for_each(&mut keep);
        match event.body {
            EventBody::Call(c) => {
                keep(c.call_id);
                c.client_id.into_iter().chain(c.card_id).for_each(&mut keep);
            }
            EventBody::Message(m) => {
                keep(m.message_id);
                keep(m.dialog_id);
                keep(m.channel);
                m.client_id.into_iter().for_each(&mut keep);
            }
            EventBody::CardChange(c) => {
                keep(c.card_id);
                [c.pipeline, c.stage_from, c.stage_to, c.task_id, c.client_id, c.invoice_id, c.currency]
                    .into_iter()
                    .flatten()
                    .for_each(&mut keep);
            }
        }
    });
}

/// The `oneof kind` member that `get` picks out, a fresh `T` when `kind` holds another member or
/// none: a member that occurs again is merged, another member replaces it, as protobuf has it.
fn member<T: Default>(kind: &mut Option<Kind>, make: fn(T) -> Kind, get: fn(&mut Kind) -> Option<&mut T>) -> &mut T {
    if kind.as_mut().is_none_or(|k| get(k).is_none()) {
        *kind = Some(make(T::default()));
    }
    kind.as_mut().and_then(get).expect("the member was just made")
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

struct Reader<'a, 'p> {
    buf: &'a [u8],
    pool: &'p mut Vec<String>,
}

impl<'a> Reader<'a, '_> {
    /// A reader of `buf` sharing this one's pool.
    fn sub<'b>(&mut self, buf: &'b [u8]) -> Reader<'b, '_> {
        Reader { buf, pool: self.pool }
    }

    fn varint(&mut self) -> Result<u64> {
        // Keys, lengths, enums and flags mostly fit one byte.
        if let Some((&byte, rest)) = self.buf.split_first() {
            if byte < 0x80 {
                self.buf = rest;
                return Ok(u64::from(byte));
            }
        }
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().take(10).enumerate() {
            // The tenth byte may only hold the top bit of 64.
            if i == 9 && byte > 1 {
                return Err(error("invalid varint"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(error(if self.buf.len() < 10 { "buffer underflow" } else { "invalid varint" }))
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(error(format!("invalid key value: {key}")));
        }
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(error(format!("invalid wire type value: {wire_type}")));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(error("invalid tag value: 0"));
        }
        Ok((field, wire_type))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.buf.len() {
            return Err(error("buffer underflow"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| error("buffer underflow"))?)
    }

    fn fixed64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// Skips a field of an unknown number (after its key).
    fn skip(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_DEPTH {
                    return Err(error("recursion limit reached"));
                }
                loop {
                    if self.buf.is_empty() {
                        return Err(error("buffer underflow"));
                    }
                    let (inner, inner_type) = self.key()?;
                    if inner_type == END_GROUP {
                        return if inner == field { Ok(()) } else { Err(error("unexpected end group tag")) };
                    }
                    self.skip(inner, inner_type, depth + 1)?;
                }
            }
            _ => Err(error("unexpected end group tag")),
        }
    }

    fn expect(wire_type: u8, expected: u8, field: &str) -> Result<()> {
        if wire_type == expected {
            Ok(())
        } else {
            Err(error(format!("{field}: invalid wire type: {wire_type} (expected {expected})")))
        }
    }

    /// A string field's value, in a pooled buffer.
    fn string(&mut self, wire_type: u8, field: &str) -> Result<String> {
        Self::expect(wire_type, LEN, field)?;
        let bytes = self.bytes()?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| error(format!("{field}: invalid string value: not UTF-8")))?;
        let mut s = self.pool.pop().unwrap_or_default();
        s.clear();
        s.push_str(text);
        Ok(s)
    }

    /// A string field's value, written over `into` (reusing its buffer).
    fn string_into(&mut self, wire_type: u8, field: &str, into: &mut String) -> Result<()> {
        let value = self.string(wire_type, field)?;
        let old = std::mem::replace(into, value);
        if old.capacity() > 0 && self.pool.len() < POOL_STRINGS {
            self.pool.push(old);
        }
        Ok(())
    }

    fn optional_string(&mut self, wire_type: u8, field: &str, into: &mut Option<String>) -> Result<()> {
        match into {
            Some(existing) => self.string_into(wire_type, field, existing),
            None => {
                *into = Some(self.string(wire_type, field)?);
                Ok(())
            }
        }
    }

    fn int64(&mut self, wire_type: u8, field: &str) -> Result<i64> {
        Self::expect(wire_type, VARINT, field)?;
        Ok(self.varint()? as i64)
    }

    fn int32(&mut self, wire_type: u8, field: &str) -> Result<i32> {
        Self::expect(wire_type, VARINT, field)?;
        Ok(self.varint()? as i32)
    }

    fn double(&mut self, wire_type: u8, field: &str) -> Result<f64> {
        Self::expect(wire_type, FIXED64, field)?;
        Ok(f64::from_bits(self.fixed64()?))
    }

    /// The bytes of a sub-message field.
    fn message(&mut self, wire_type: u8, field: &str) -> Result<&'a [u8]> {
        Self::expect(wire_type, LEN, field)?;
        self.bytes()
    }

    fn event(&mut self, event: &mut proto::Event) -> Result<()> {
        while !self.buf.is_empty() {
            let (field, wire_type) = self.key()?;
            match field {
                1 => self.string_into(wire_type, "Event.event_id", &mut event.event_id)?,
                2 => event.occurred_at = self.int64(wire_type, "Event.occurred_at")?,
                3 => self.string_into(wire_type, "Event.manager_id", &mut event.manager_id)?,
                4 => self.optional_string(wire_type, "Event.team", &mut event.team)?,
                5 => self.optional_string(wire_type, "Event.source", &mut event.source)?,
                10 => {
                    let bytes = self.message(wire_type, "Event.call")?;
                    let call = member(&mut event.kind, Kind::Call, |k| match k {
                        Kind::Call(call) => Some(call),
                        _ => None,
                    });
                    self.sub(bytes).call(call)?;
                }
                11 => {
                    let bytes = self.message(wire_type, "Event.message")?;
                    let message = member(&mut event.kind, Kind::Message, |k| match k {
                        Kind::Message(message) => Some(message),
                        _ => None,
                    });
                    self.sub(bytes).message_body(message)?;
                }
                12 => {
                    let bytes = self.message(wire_type, "Event.card_change")?;
                    let change = member(&mut event.kind, Kind::CardChange, |k| match k {
                        Kind::CardChange(change) => Some(change),
                        _ => None,
                    });
                    self.sub(bytes).card_change(change)?;
                }
                _ => self.skip(field, wire_type, 0)?,
            }
        }
        Ok(())
    }

    fn call(&mut self, call: &mut proto::Call) -> Result<()> {
        while !self.buf.is_empty() {
            let (field, wire_type) = self.key()?;
            match field {
                1 => self.string_into(wire_type, "Call.call_id", &mut call.call_id)?,
                2 => call.direction = self.int32(wire_type, "Call.direction")?,
                3 => call.status = self.int32(wire_type, "Call.status")?,
                4 => call.started_at = self.int64(wire_type, "Call.started_at")?,
                5 => call.answered_at = Some(self.int64(wire_type, "Call.answered_at")?),
                6 => call.ended_at = self.int64(wire_type, "Call.ended_at")?,
                7 => call.talk_seconds = Some(self.double(wire_type, "Call.talk_seconds")?),
                8 => self.optional_string(wire_type, "Call.client_id", &mut call.client_id)?,
                9 => self.optional_string(wire_type, "Call.card_id", &mut call.card_id)?,
                _ => self.skip(field, wire_type, 0)?,
            }
        }
        Ok(())
    }

    fn message_body(&mut self, message: &mut proto::Message) -> Result<()> {
        while !self.buf.is_empty() {
            let (field, wire_type) = self.key()?;
            match field {
                1 => self.string_into(wire_type, "Message.message_id", &mut message.message_id)?,
                2 => self.string_into(wire_type, "Message.dialog_id", &mut message.dialog_id)?,
                3 => self.string_into(wire_type, "Message.channel", &mut message.channel)?,
                4 => message.direction = self.int32(wire_type, "Message.direction")?,
                5 => self.optional_string(wire_type, "Message.client_id", &mut message.client_id)?,
                6 => {
                    Self::expect(wire_type, VARINT, "Message.new_dialog")?;
                    message.new_dialog = Some(self.varint()? != 0);
                }
                _ => self.skip(field, wire_type, 0)?,
            }
        }
        Ok(())
    }

    fn card_change(&mut self, change: &mut proto::CardChange) -> Result<()> {
        while !self.buf.is_empty() {
            let (field, wire_type) = self.key()?;
            match field {
                1 => self.string_into(wire_type, "CardChange.card_id", &mut change.card_id)?,
                2 => change.card_type = self.int32(wire_type, "CardChange.card_type")?,
                3 => change.change = self.int32(wire_type, "CardChange.change")?,
                4 => self.optional_string(wire_type, "CardChange.pipeline", &mut change.pipeline)?,
                5 => self.optional_string(wire_type, "CardChange.stage_from", &mut change.stage_from)?,
                6 => self.optional_string(wire_type, "CardChange.stage_to", &mut change.stage_to)?,
                7 => change.stage_progress_pct = Some(self.double(wire_type, "CardChange.stage_progress_pct")?),
                8 => {
                    Self::expect(wire_type, VARINT, "CardChange.comment_length")?;
                    change.comment_length = Some(self.varint()? as u32);
                }
                9 => self.optional_string(wire_type, "CardChange.task_id", &mut change.task_id)?,
                10 => change.task_due_at = Some(self.int64(wire_type, "CardChange.task_due_at")?),
                11 => change.task_due_from = Some(self.int64(wire_type, "CardChange.task_due_from")?),
                12 => change.amount = Some(self.double(wire_type, "CardChange.amount")?),
                13 => self.optional_string(wire_type, "CardChange.client_id", &mut change.client_id)?,
                14 => change.margin = Some(self.double(wire_type, "CardChange.margin")?),
                15 => self.optional_string(wire_type, "CardChange.invoice_id", &mut change.invoice_id)?,
                16 => self.optional_string(wire_type, "CardChange.currency", &mut change.currency)?,
                _ => self.skip(field, wire_type, 0)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::proto::event::Kind;

    fn text() -> BoxedStrategy<String> {
        prop_oneof![Just(String::new()), "[a-z0-9-]{1,12}", ".{0,40}"].boxed()
    }

    fn opt_text() -> BoxedStrategy<Option<String>> {
        proptest::option::of(text()).boxed()
    }

    fn call() -> BoxedStrategy<proto::Call> {
        (
            (text(), -1..7i32, -1..7i32, any::<i64>(), proptest::option::of(any::<i64>()), any::<i64>()),
            (proptest::option::of(any::<f64>()), opt_text(), opt_text()),
        )
            .prop_map(|((call_id, direction, status, started_at, answered_at, ended_at), (talk, client, card))| {
                proto::Call {
                    call_id,
                    direction,
                    status,
                    started_at,
                    answered_at,
                    ended_at,
                    talk_seconds: talk,
                    client_id: client,
                    card_id: card,
                }
            })
            .boxed()
    }

    fn message() -> BoxedStrategy<proto::Message> {
        (text(), text(), text(), -1..4i32, opt_text(), proptest::option::of(any::<bool>()))
            .prop_map(|(message_id, dialog_id, channel, direction, client_id, new_dialog)| proto::Message {
                message_id,
                dialog_id,
                channel,
                direction,
                client_id,
                new_dialog,
            })
            .boxed()
    }

    fn card_change() -> BoxedStrategy<proto::CardChange> {
        (
            (text(), -1..7i32, -1..16i32, opt_text(), opt_text(), opt_text()),
            (proptest::option::of(any::<f64>()), proptest::option::of(any::<u32>()), opt_text()),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<f64>()),
            ),
            (opt_text(), proptest::option::of(any::<f64>()), opt_text(), opt_text()),
        )
            .prop_map(
                |(
                    (card_id, card_type, change, pipeline, stage_from, stage_to),
                    (stage_progress_pct, comment_length, task_id),
                    (task_due_at, task_due_from, amount),
                    (client_id, margin, invoice_id, currency),
                )| proto::CardChange {
                    card_id,
                    card_type,
                    change,
                    pipeline,
                    stage_from,
                    stage_to,
                    stage_progress_pct,
                    comment_length,
                    task_id,
                    task_due_at,
                    task_due_from,
                    amount,
                    client_id,
                    margin,
                    invoice_id,
                    currency,
                },
            )
            .boxed()
    }

    fn event() -> BoxedStrategy<proto::Event> {
        let kind = proptest::option::of(prop_oneof![
            call().prop_map(Kind::Call),
            message().prop_map(Kind::Message),
            card_change().prop_map(Kind::CardChange),
        ]);
        (text(), any::<i64>(), text(), opt_text(), opt_text(), kind)
            .prop_map(|(event_id, occurred_at, manager_id, team, source, kind)| proto::Event {
                event_id,
                occurred_at,
                manager_id,
                team,
                source,
                kind,
            })
            .boxed()
    }

    /// Both readers agree: the same message, or both fail. NaN doubles compare by bits.
    fn assert_same(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let ours = decode(bytes);
        let prost = proto::Event::decode(bytes);
        match (&ours, &prost) {
            (Ok(a), Ok(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "bytes {:?}", bytes),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "ours {ours:?}, prost {prost:?}, bytes {bytes:?}"),
        }
        if let Ok(event) = ours {
            // Its strings back into the pool, so the next decode on this thread reuses buffers
            // that held other values.
            give_back(event);
        }
        Ok(())
    }

    fn give_back(event: proto::Event) {
        let mut strings = vec![event.event_id, event.manager_id];
        strings.extend(event.team.into_iter().chain(event.source));
        match event.kind {
            Some(Kind::Call(c)) => strings.extend([Some(c.call_id), c.client_id, c.card_id].into_iter().flatten()),
            Some(Kind::Message(m)) => {
                strings.extend([m.message_id, m.dialog_id, m.channel].into_iter().chain(m.client_id))
            }
            Some(Kind::CardChange(c)) => strings.extend(
                [
                    Some(c.card_id),
                    c.pipeline,
                    c.stage_from,
                    c.stage_to,
                    c.task_id,
                    c.client_id,
                    c.invoice_id,
                    c.currency,
                ]
                .into_iter()
                .flatten(),
            ),
            None => {}
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.extend(strings.into_iter().filter(|s| s.capacity() > 0));
            pool.truncate(POOL_STRINGS);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn reads_what_prost_writes_as_prost_reads_it(event in event()) {
            let bytes = event.encode_to_vec();
            prop_assert_eq!(format!("{:?}", decode(&bytes).expect("prost's own encoding")), format!("{event:?}"));
            assert_same(&bytes)?;
        }

        /// Two messages one after the other merge: later scalars and strings win, the same oneof
        /// member merges, another member replaces it.
        #[test]
        fn concatenated_messages_merge_as_prost_merges_them(a in event(), b in event()) {
            let mut bytes = a.encode_to_vec();
            bytes.extend(b.encode_to_vec());
            assert_same(&bytes)?;
        }

        #[test]
        fn truncated_and_corrupted_messages_fail_or_read_as_prost_reads_them(
            event in event(),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let bytes = event.encode_to_vec();
            let cut = cut.index(bytes.len() + 1);
            assert_same(&bytes[..cut])?;
            let mut corrupted = bytes.clone();
            if !corrupted.is_empty() {
                for (at, byte) in flips {
                    let at = at.index(corrupted.len());
                    corrupted[at] = byte;
                }
            }
            assert_same(&corrupted)?;
        }

        #[test]
        fn arbitrary_bytes_fail_or_read_as_prost_reads_them(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            assert_same(&bytes)?;
        }
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_and_bad_wire_types_fail() {
        let mut bytes = proto::Event { event_id: "e-1".into(), ..Default::default() }.encode_to_vec();
        // Field 99 as a varint, a fixed32, and a group holding a nested group.
        bytes.extend([0x98, 0x06, 0x01]);
        bytes.extend([0x9d, 0x06, 1, 2, 3, 4]);
        bytes.extend([0x9b, 0x06, 0x0b, 0x08, 0x05, 0x0c, 0x9c, 0x06]);
        let event = decode(&bytes).expect("unknown fields are skipped");
        assert_eq!(event.event_id, "e-1");
        assert_same(&bytes).unwrap();
        for bad in [
            vec![0x0a, 0x05, b'a'],                       // a string longer than what is left
            vec![0x08, 0x01],                             // event_id (a string) as a varint
            vec![0x0a, 0x02, 0xff, 0xfe],                 // event_id not UTF-8
            vec![0x00],                                   // field number 0
            vec![0x0e],                                   // wire type 6
            [&[0x10][..], &[0xff; 10], &[0x01]].concat(), // occurred_at: a varint of 11 bytes
            vec![0x9c, 0x06],                             // an end group without a start
            vec![0x9b, 0x06, 0xa4, 0x06],                 // a group ended by another field's end
            vec![0x52, 0x02, 0x0a, 0x05],                 // a call whose call_id runs past the call
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
            assert!(proto::Event::decode(bad.as_slice()).is_err(), "prost agrees: {bad:?}");
        }
    }

    #[test]
    fn recycled_buffers_never_leak_into_the_next_event() {
        let full = proto::Event {
            event_id: "a-long-event-id-0001".into(),
            occurred_at: 1_795_000_000_000,
            manager_id: "manager-one".into(),
            team: Some("team-a".into()),
            source: Some("pbx".into()),
            kind: Some(Kind::Message(proto::Message {
                message_id: "m-1".into(),
                dialog_id: "d-1".into(),
                channel: "whatsapp".into(),
                direction: 1,
                client_id: Some("c-1".into()),
                new_dialog: Some(true),
            })),
        };
        let bare = proto::Event { event_id: "e".into(), manager_id: "m".into(), ..Default::default() };
        for _ in 0..3 {
            let decoded = decode(&full.encode_to_vec()).unwrap();
            assert_eq!(decoded, full);
            let model = crate::protobuf::decode(&full.encode_to_vec(), None).unwrap();
            recycle(model);
            assert_eq!(decode(&bare.encode_to_vec()).unwrap(), bare);
        }
        POOL.with(|pool| assert!(pool.borrow().len() <= POOL_STRINGS));
    }
}
