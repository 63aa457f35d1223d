//! Body decoders: each turns a payload into one document tree (a `serde_json::Value`) that paths
//! read. None of them panics on any input; all refuse payloads over [`MAX_BODY_BYTES`].

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
    /// `{"a": {"b": [{"c": "1"}]}}`. Objects whose keys are all numbers become arrays in
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
                let path = bracket_key(field).ok_or_else(|| format!("bad field name {field:?}"))?;
                let mut node = &mut document;
                for key in &path {
                    node = match node {
                        Node::Object(map) => map.get_mut(key.as_str()),
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
    for (key, value) in form_urlencoded::parse(payload) {
        map.insert(key.into_owned(), Node::String(value.into_owned()));
    }
    Node::Object(map)
}

/// `a[b][0]` -> `["a", "b", "0"]`; `a[]` appends (an empty segment); `None` for unbalanced
/// brackets or too deep a nesting.
fn bracket_key(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut parts = vec![head.to_owned()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        parts.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
        if parts.len() > MAX_BRACKET_DEPTH {
            return None;
        }
    }
    Some(parts)
}

fn form_brackets(payload: &[u8]) -> Result<Node, String> {
    let mut root = Node::Object(Map::new());
    for (key, value) in form_urlencoded::parse(payload) {
        let Some(parts) = bracket_key(&key) else {
            return Err(format!("form key {key:?}: unbalanced brackets or nested deeper than {MAX_BRACKET_DEPTH}"));
        };
        let mut node = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let Node::Object(map) = node else {
                return Err(format!("form key {key:?}: {part:?} nests under a value"));
            };
            let part = if part.is_empty() { map.len().to_string() } else { part.clone() };
            if part.parse::<usize>().is_ok_and(|n| n > MAX_BRACKET_INDEX) {
                return Err(format!("form key {key:?}: index above {MAX_BRACKET_INDEX}"));
            }
            if last {
                map.insert(part, Node::String(value.to_string()));
                break;
            }
            node = map.entry(part).or_insert_with(|| Node::Object(Map::new()));
        }
    }
    Ok(arrays(root))
}

/// Objects whose keys are all decimal indices become arrays, ordered by index.
fn arrays(node: Node) -> Node {
    match node {
        Node::Object(map) => {
            let numeric = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if numeric {
                let mut items: Vec<(usize, Node)> =
                    map.into_iter().map(|(k, v)| (k.parse::<usize>().unwrap_or(usize::MAX), arrays(v))).collect();
                items.sort_by_key(|(i, _)| *i);
                Node::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Node::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
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
        fn decoders_never_panic_on_shaped_input(text in "([a-z\\[\\]%0-9=&:\\n\\r ]|%5B|%5D|\\[\\]){0,200}") {
            for decoder in [Decoder::Form, Decoder::FormBrackets, Decoder::AmiBlocks,
                            Decoder::FormJson { field: "a[b]".into() }] {
                let _ = decoder.decode(text.as_bytes());
            }
        }
    }
}
