//! Why a payload was rejected.

use crate::model::Kind;

/// Every value [`DecodeError::reason`] can return, so an exporter can pre-create the series of
/// `salespulse_events_rejected_total{reason=...}`.
pub const REJECT_REASONS: &[&str] = &[
    "empty_payload",
    "too_large",
    "malformed_json",
    "malformed_protobuf",
    "missing_field",
    "invalid_field",
    "unknown_kind",
    "kind_mismatch",
    "invalid_manager_id",
    "currency_mismatch",
];

/// A payload that is not a valid event. The `Display` form is meant for logs: it names the field
/// and what was wrong, but never echoes a field's value (values may be client identifiers).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload had no bytes.
    #[error("empty payload")]
    EmptyPayload,
    /// The payload was larger than [`crate::MAX_PAYLOAD_BYTES`]; it was not parsed.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The payload's size in bytes.
        len: usize,
        /// The limit, [`crate::MAX_PAYLOAD_BYTES`].
        limit: usize,
    },
    /// Not a JSON object: syntax error, truncation, invalid UTF-8, trailing data, a duplicate key.
    #[error("malformed JSON: {detail}")]
    MalformedJson {
        /// The parser's message, with position.
        detail: String,
    },
    /// Not a decodable `salespulse.v1.Event` message.
    #[error("malformed protobuf: {detail}")]
    MalformedProtobuf {
        /// The decoder's message.
        detail: String,
    },
    /// A required field was absent, `null`, an empty string, or the protobuf default
    /// (0 / `*_UNSPECIFIED`). For an event whose kind cannot be told, `field` is `"kind"`.
    #[error("missing required field `{field}`")]
    MissingField {
        /// The field's name as in the contract.
        field: &'static str,
    },
    /// A field was present but had the wrong type or a value outside the contract.
    #[error("invalid field `{field}`: {detail}")]
    InvalidField {
        /// The field's name as in the contract.
        field: &'static str,
        /// What was wrong with it.
        detail: &'static str,
    },
    /// The `kind` field named no known kind.
    #[error("unknown kind `{kind}`")]
    UnknownKind {
        /// The value given (cut to 64 bytes).
        kind: String,
    },
    /// The event's kind differs from the kind configured for its topic.
    #[error("event of kind `{actual}` on a topic configured for `{expected}`")]
    KindMismatch {
        /// The topic's configured kind.
        expected: Kind,
        /// The event's kind.
        actual: Kind,
    },
    /// `manager_id` cannot be a metric label: too long, control characters, or phone-like.
    #[error("invalid manager_id: {detail}")]
    InvalidManagerId {
        /// What was wrong (the value itself is not repeated: it may be a phone number).
        detail: &'static str,
    },
    /// The event's `currency` is not the configured one: amounts in two currencies are never
    /// summed ([`crate::check_currency`]).
    #[error("currency `{actual}` is not the configured `{expected}`")]
    CurrencyMismatch {
        /// The configured currency.
        expected: String,
        /// The event's currency (a validated 3-letter code).
        actual: String,
    },
}

impl DecodeError {
    /// A short fixed label for the `reason` label of `salespulse_events_rejected_total`; one of
    /// [`REJECT_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::EmptyPayload => "empty_payload",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::MalformedJson { .. } => "malformed_json",
            DecodeError::MalformedProtobuf { .. } => "malformed_protobuf",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::UnknownKind { .. } => "unknown_kind",
            DecodeError::KindMismatch { .. } => "kind_mismatch",
            DecodeError::InvalidManagerId { .. } => "invalid_manager_id",
            DecodeError::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }

    /// The contract field the error is about, if it is about one field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DecodeError::MissingField { field } | DecodeError::InvalidField { field, .. } => Some(field),
            DecodeError::UnknownKind { .. } | DecodeError::KindMismatch { .. } => Some("kind"),
            DecodeError::InvalidManagerId { .. } => Some("manager_id"),
            DecodeError::CurrencyMismatch { .. } => Some("currency"),
            _ => None,
        }
    }

    pub(crate) fn missing(field: &'static str) -> Self {
        DecodeError::MissingField { field }
    }

    pub(crate) fn invalid(field: &'static str, detail: &'static str) -> Self {
        DecodeError::InvalidField { field, detail }
    }

    pub(crate) fn unknown_kind(value: &str) -> Self {
        let mut end = value.len().min(64);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        DecodeError::UnknownKind { kind: value[..end].to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_and_fields_named() {
        let cases = [
            (DecodeError::EmptyPayload, "empty_payload", None),
            (DecodeError::TooLarge { len: 2, limit: 1 }, "too_large", None),
            (DecodeError::MalformedJson { detail: "x".into() }, "malformed_json", None),
            (DecodeError::MalformedProtobuf { detail: "x".into() }, "malformed_protobuf", None),
            (DecodeError::missing("call_id"), "missing_field", Some("call_id")),
            (DecodeError::invalid("team", "too long"), "invalid_field", Some("team")),
            (DecodeError::unknown_kind("sms"), "unknown_kind", Some("kind")),
            (DecodeError::KindMismatch { expected: Kind::Call, actual: Kind::Message }, "kind_mismatch", Some("kind")),
            (DecodeError::InvalidManagerId { detail: "phone-like" }, "invalid_manager_id", Some("manager_id")),
            (
                DecodeError::CurrencyMismatch { expected: "RUB".into(), actual: "USD".into() },
                "currency_mismatch",
                Some("currency"),
            ),
        ];
        assert_eq!(cases.len(), REJECT_REASONS.len());
        for (err, reason, field) in cases {
            assert_eq!(err.reason(), reason);
            assert!(REJECT_REASONS.contains(&reason));
            assert_eq!(err.field(), field);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn unknown_kind_is_cut_on_a_char_boundary() {
        let long = "ж".repeat(100);
        let DecodeError::UnknownKind { kind } = DecodeError::unknown_kind(&long) else { panic!("wrong variant") };
        assert_eq!(kind.len(), 64);
    }
}
