//! Any bytes as a JSON event, for every topic kind: no panic, no hang, and whatever decodes
//! survives a round trip through the canonical JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_events::{decode, encode_json, Encoding, Kind};

fuzz_target!(|data: &[u8]| {
    for expected in [None, Some(Kind::Call), Some(Kind::Message), Some(Kind::CardChange)] {
        if let Ok(event) = decode(data, Encoding::Json, expected) {
            let again = decode(&encode_json(&event), Encoding::Json, expected);
            assert_eq!(again.as_ref(), Ok(&event), "canonical JSON of a decoded event must decode to it");
        }
    }
});
