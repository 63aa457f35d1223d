//! Body decoders: each turns a payload into one document tree (a `serde_json::Value`) that paths
//! read. None of them panics on any input; all refuse payloads over [`MAX_BODY_BYTES`].

use std::borrow::Cow;

use serde_json::{Map, Value as Node};

/// Payloads larger than this are refused before decoding (the same limit as canonical events).
pub const MAX_BODY_BYTES: usize = salespulse_events::MAX_PAYLOAD_BYTES;

/// Deepest bracket nesting `form_brackets` accepts (`a[b][c]` is 3).
pub const MAX_BRACKET_DEPTH: usize = 16;

/// Largest numeric bracket index `form_brackets` accepts, so `a[4000000000]` cannot ask for a
/// huge array.
pub const MAX_BRACKET_INDEX: usize = 10_000;

/// How a source's body is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoder {
    /// A JSON document.
    Json,
    /// `application/x-www-form-urlencoded`, flat: one string per key (the last one wins).
    Form,
    /// Form encoding whose keys nest with brackets, as PHP reads them: `a[b][0][c]=1` becomes
    /// `{"a": {"b": [{"c": "1"}]}}`. Nested objects whose keys are all numbers become arrays in
    /// numeric order.
    FormBrackets,
    /// Form encoding (with brackets) where one field holds a JSON document, which replaces the
    /// field's string.
    FormJson {
        /// The form field (bracket syntax allowed) holding JSON.
        field: String,
    },
    /// Asterisk Manager Interface events: `Key: value` lines, a blank line ends an event. The
    /// document is an array with one object per event.
    AmiBlocks,
}

impl Decoder {
    /// The configured name (`json`, `form`, `form_brackets`, `form_json`, `ami`).
    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Json => "json",
            Decoder::Form => "form",
            Decoder::FormBrackets => "form_brackets",
            Decoder::FormJson { .. } => "form_json",
            Decoder::AmiBlocks => "ami",
        }
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &[u8]) -> Result<Node, String> {
        if payload.len() > MAX_BODY_BYTES {
            return Err(format!("payload of {} bytes exceeds the limit of {MAX_BODY_BYTES}", payload.len()));
        }
        match self {
            Decoder::Json => serde_json::from_slice(payload).map_err(|e| format!("malformed JSON: {e}")),
            Decoder::Form => Ok(form_flat(payload)),
            Decoder::FormBrackets => form_brackets(payload),
            Decoder::FormJson { field } => {
                let mut document = form_brackets(payload)?;
                let mut path = Vec::new();
                if !bracket_key(field, &mut path) {
                    return Err(format!("bad field name {field:?}"));
                }
                let mut node = &mut document;
                for range in &path {
                    let key = &field[range.clone()];
                    node = match node {
                        Node::Object(map) => map.get_mut(key),
                        Node::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                        _ => None,
                    }
                    .ok_or_else(|| format!("form field {field:?} is absent"))?;
                }
                let Node::String(text) = node else {
                    return Err(format!("form field {field:?} is not a string"));
                };
                *node =
                    serde_json::from_str(text).map_err(|e| format!("malformed JSON in form field {field:?}: {e}"))?;
                Ok(document)
            }
            Decoder::AmiBlocks => ami_blocks(payload),
        }
    }
}

fn form_flat(payload: &[u8]) -> Node {
    let mut map = Map::new();
    for (key, value) in form_pairs(payload) {
        map.insert(key.into_owned(), Node::String(value.into_owned()));
    }
    Node::Object(map)
}

/// The `name=value` pairs of a form body, decoded exactly as `form_urlencoded::parse` decodes
/// them (empty `&&` sequences skipped, a pair without `=` has an empty value, `+` is a space,
/// `%XX` a byte and a `%` not followed by two hex digits itself, invalid UTF-8 replaced by
/// U+FFFD), but in one pass with one allocation per component that needs decoding: the
/// crate's decoder grows its output a byte at a time, which was most of the time of the
/// amoCRM and Bitrix24 mappings, whose keys are all percent-encoded brackets.
pub(crate) fn form_pairs(payload: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    payload.split(|&b| b == b'&').filter(|sequence| !sequence.is_empty()).map(|sequence| {
        let (name, value) = match sequence.iter().position(|&b| b == b'=') {
            Some(at) => (&sequence[..at], &sequence[at + 1..]),
            None => (sequence, &[][..]),
        };
        (form_component(name), form_component(value))
    })
}

/// One decoded form component; borrowed when it holds no `+` and no `%`.
fn form_component(raw: &[u8]) -> Cow<'_, str> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        // The strict check first: it is much faster than the lossy one on valid text.
        return match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        i += 1;
        match byte {
            b'+' => out.push(b' '),
            b'%' => match (raw.get(i).and_then(|&h| hex(h)), raw.get(i + 1).and_then(|&l| hex(l))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Splits `a[b][0]` into `out` as the byte ranges of `a`, `b` and `0`; `a[]` appends (an empty
/// segment). `false` for unbalanced brackets or too deep a nesting. (Ranges rather than `&str`,
/// so one buffer serves every key of a body.)
fn bracket_key(key: &str, out: &mut Vec<std::ops::Range<usize>>) -> bool {
    out.clear();
    let head_end = key.find('[').unwrap_or(key.len());
    if head_end == 0 {
        return false;
    }
    out.push(0..head_end);
    let mut at = head_end;
    while at < key.len() {
        if key.as_bytes()[at] != b'[' {
            return false;
        }
        let Some(close) = key[at + 1..].find(']') else { return false };
        out.push(at + 1..at + 1 + close);
        at += close + 2;
        if out.len() > MAX_BRACKET_DEPTH {
            return false;
        }
    }
    true
}

fn form_brackets(payload: &[u8]) -> Result<Node, String> {
    let mut root = Map::new();
    let mut parts = Vec::with_capacity(MAX_BRACKET_DEPTH + 1);
    for (key, value) in form_pairs(payload) {
        if !bracket_key(&key, &mut parts) {
            return Err(format!("form key {key:?}: unbalanced brackets or nested deeper than {MAX_BRACKET_DEPTH}"));
        }
        let mut map = &mut root;
        let last = parts.len() - 1;
        for (i, range) in parts.iter().enumerate() {
            let part = &key[range.clone()];
            let appended;
            let part = if part.is_empty() {
                appended = map.len().to_string();
                appended.as_str()
            } else {
                part
            };
            if part.parse::<usize>().is_ok_and(|n| n > MAX_BRACKET_INDEX) {
                return Err(format!("form key {key:?}: index above {MAX_BRACKET_INDEX}"));
            }
            if i == last {
                map.insert(part.to_owned(), Node::String(value.into_owned()));
                break;
            }
            if !map.contains_key(part) {
                map.insert(part.to_owned(), Node::Object(Map::new()));
            }
            map = match map.get_mut(part) {
                Some(Node::Object(next)) => next,
                _ => return Err(format!("form key {key:?}: {part:?} nests under a value")),
            };
        }
    }
    // The body itself stays an object even when every field name is a number (`0=a&1=b`):
    // paths read it as fields (found by fuzzing: the root became an array).
    for child in root.values_mut() {
        arrays(child);
    }
    Ok(Node::Object(root))
}

/// Objects whose keys are all decimal indices become arrays, ordered by index (in place: only
/// the objects that become arrays are rebuilt).
fn arrays(node: &mut Node) {
    let Node::Object(map) = node else { return };
    for child in map.values_mut() {
        arrays(child);
    }
    let numeric = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
    if numeric {
        let mut items: Vec<(usize, Node)> =
            std::mem::take(map).into_iter().map(|(k, v)| (k.parse::<usize>().unwrap_or(usize::MAX), v)).collect();
        items.sort_by_key(|(i, _)| *i);
        *node = Node::Array(items.into_iter().map(|(_, v)| v).collect());
    }
}

/// AMI: `Key: value` lines (CRLF or LF), blank lines between events; a line without a colon is
/// an error; keys keep their case; the value is trimmed of surrounding spaces.
fn ami_blocks(payload: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let mut events = Vec::new();
    let mut current = Map::new();
    for (number, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !current.is_empty() {
                events.push(Node::Object(std::mem::take(&mut current)));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: expected `Key: value`", number + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {}: empty key", number + 1));
        }
        current.insert(key.to_owned(), Node::String(value.trim().to_owned()));
    }
    if !current.is_empty() {
        events.push(Node::Object(current));
    }
    Ok(Node::Array(events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn form_flat_decodes_percent_and_plus() {
        let doc = Decoder::Form.decode(b"a=1&b=x+y%2Bz&a=2&c").unwrap();
        assert_eq!(doc, json!({"a": "2", "b": "x y+z", "c": ""}));
    }

    #[test]
    fn form_brackets_nest_and_make_arrays() {
        let body = b"leads%5Bstatus%5D%5B1%5D%5Bid%5D=2&leads[status][0][id]=1&leads[status][0][x]=a&account[id]=9&l[]=p&l[]=q";
        let doc = Decoder::FormBrackets.decode(body).unwrap();
        assert_eq!(
            doc,
            json!({"leads": {"status": [{"id": "1", "x": "a"}, {"id": "2"}]}, "account": {"id": "9"}, "l": ["p", "q"]})
        );
        // Regression (fuzzing): numeric field names at the top stay fields of an object.
        assert_eq!(Decoder::FormBrackets.decode(b"5").unwrap(), json!({"5": ""}));
        assert_eq!(Decoder::FormBrackets.decode(b"1=b&0=a").unwrap(), json!({"0": "a", "1": "b"}));
        for bad in ["a[b=1", "[x]=1", "a[1]=1&a[1][b]=2", "a[99999999]=1"] {
            assert!(Decoder::FormBrackets.decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = format!("a{}=1", "[x]".repeat(MAX_BRACKET_DEPTH));
        assert!(Decoder::FormBrackets.decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn form_json_replaces_the_field() {
        let decoder = Decoder::FormJson { field: "data[payload]".into() };
        let doc = decoder.decode(b"event=x&data[payload]=%7B%22a%22%3A%5B1%2C2%5D%7D").unwrap();
        assert_eq!(doc, json!({"event": "x", "data": {"payload": {"a": [1, 2]}}}));
        assert!(decoder.decode(b"event=x").unwrap_err().contains("absent"));
        assert!(decoder.decode(b"data[payload]={").unwrap_err().contains("malformed JSON"));
    }

    #[test]
    fn ami_blocks_split_on_blank_lines() {
        let doc = Decoder::AmiBlocks
            .decode(b"Event: Cdr\r\nSource: 101\r\nAnswerTime: \r\n\r\nEvent: Hangup\nCause: 16\n\n\n")
            .unwrap();
        assert_eq!(
            doc,
            json!([{"Event": "Cdr", "Source": "101", "AnswerTime": ""}, {"Event": "Hangup", "Cause": "16"}])
        );
        assert_eq!(Decoder::AmiBlocks.decode(b"").unwrap(), json!([]));
        assert!(Decoder::AmiBlocks.decode(b"Event Cdr\n").unwrap_err().contains("line 1"));
        assert!(Decoder::AmiBlocks.decode(b"a: 1\n: x\n").unwrap_err().contains("line 2"));
        assert!(Decoder::AmiBlocks.decode(&[0xff, b':']).is_err());
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        for decoder in [Decoder::Json, Decoder::Form, Decoder::FormBrackets, Decoder::AmiBlocks] {
            assert!(decoder.decode(&big).unwrap_err().contains("exceeds"));
        }
    }

    proptest! {
        // The hermetic stand-in for fuzzing: arbitrary bytes, and bytes shaped like each format,
        // never panic any decoder.
        #[test]
        fn decoders_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for decoder in [Decoder::Json, Decoder::Form, Decoder::FormBrackets, Decoder::AmiBlocks,
                            Decoder::FormJson { field: "a[b]".into() }] {
                let _ = decoder.decode(&bytes);
            }
        }

        #[test]
        fn form_pairs_decode_as_form_urlencoded_does(text in "([a-zA-Z0-9=&+%]|%[0-9a-fA-F]{2}|%[c-f][0-9a-f]|\\[|\\]|é){0,60}",
                                                   bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for input in [text.as_bytes(), &bytes] {
                let ours: Vec<(String, String)> =
                    form_pairs(input).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                let reference: Vec<(String, String)> =
                    form_urlencoded::parse(input).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                prop_assert_eq!(ours, reference);
            }
        }

        #[test]
        fn decoders_never_panic_on_shaped_input(text in "([a-z\\[\\]%0-9=&:\\n\\r ]|%5B|%5D|\\[\\]){0,200}") {
            for decoder in [Decoder::Form, Decoder::FormBrackets, Decoder::AmiBlocks,
                            Decoder::FormJson { field: "a[b]".into() }] {
                let _ = decoder.decode(text.as_bytes());
            }
        }
    }
}
