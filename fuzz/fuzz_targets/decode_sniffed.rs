//! The path of a record without a content type: the first byte is a content-type selector, the
//! rest the body, whose encoding is sniffed as the engine does. No input may panic, and the two
//! encodings of a decoded event must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_events::{decode, encode_json, encode_protobuf, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let content_type = ["application/json", "application/x-protobuf", "text/plain", ""][usize::from(selector % 4)];
    let encoding = Encoding::from_content_type(content_type).unwrap_or_else(|| Encoding::sniff(body));
    if let Ok(event) = decode(body, encoding, None) {
        assert_eq!(decode(&encode_json(&event), Encoding::Json, None).as_ref(), Ok(&event));
        assert_eq!(decode(&encode_protobuf(&event), Encoding::Protobuf, None).as_ref(), Ok(&event));
    }
});
