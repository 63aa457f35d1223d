//! Any bytes as a protobuf event, for every topic kind: no panic, no hang, and whatever decodes
//! survives a round trip through the canonical protobuf form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_events::{decode, encode_protobuf, Encoding, Kind};

fuzz_target!(|data: &[u8]| {
    for expected in [None, Some(Kind::Call), Some(Kind::Message), Some(Kind::CardChange)] {
        if let Ok(event) = decode(data, Encoding::Protobuf, expected) {
            let again = decode(&encode_protobuf(&event), Encoding::Protobuf, expected);
            assert_eq!(again.as_ref(), Ok(&event), "canonical protobuf of a decoded event must decode to it");
        }
    }
});
