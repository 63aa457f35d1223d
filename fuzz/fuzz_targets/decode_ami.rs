//! Any bytes as Asterisk AMI event blocks: no panic, no hang, one non-empty object per block, and
//! every event the shipped Asterisk mapping makes of the blocks survives a round trip through
//! the canonical JSON form.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use salespulse_events::{decode, encode_json, Encoding};
use salespulse_sources::{Decoder, Directory, Source};
use serde_json::Value;

fn mapping() -> &'static Source {
    static MAPPING: OnceLock<Source> = OnceLock::new();
    MAPPING.get_or_init(|| {
        let directory = Arc::new(Directory::parse(include_str!("../../sources/managers.csv")).unwrap());
        Source::compile(include_str!("../../sources/asterisk.toml"), directory).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(document) = Decoder::AmiBlocks.decode(data) {
        let Value::Array(blocks) = &document else { panic!("AMI decodes to an array of blocks") };
        let lines = data.split(|&b| b == b'\n').count();
        assert!(blocks.len() <= lines, "more blocks than lines");
        for block in blocks {
            let Value::Object(fields) = block else { panic!("a block is an object") };
            assert!(!fields.is_empty(), "an empty block");
            assert!(fields.values().all(Value::is_string), "AMI values are strings");
        }
    }
    for event in mapping().map(data).events {
        let again = decode(&encode_json(&event), Encoding::Json, Some(event.kind()));
        assert_eq!(again.as_ref(), Ok(&event), "a mapped event must survive its canonical JSON");
    }
});
