//! Any bytes as a bracketed form body (amoCRM, Bitrix24), and as a form whose `data[payload]`
//! field holds JSON: no panic, no hang, nesting and indices within their limits, and every event
//! the shipped amoCRM and Bitrix24 mappings make of the body survives a round trip through the
//! canonical JSON form.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use salespulse_events::{decode, encode_json, Encoding};
use salespulse_sources::{Decoder, Directory, Source, MAX_BRACKET_DEPTH, MAX_BRACKET_INDEX};
use serde_json::Value;

fn mappings() -> &'static [Source; 2] {
    static MAPPINGS: OnceLock<[Source; 2]> = OnceLock::new();
    MAPPINGS.get_or_init(|| {
        let directory = Arc::new(Directory::parse(include_str!("../../sources/managers.csv")).unwrap());
        [
            Source::compile(include_str!("../../sources/amocrm.toml"), Arc::clone(&directory)).unwrap(),
            Source::compile(include_str!("../../sources/bitrix24.toml"), directory).unwrap(),
        ]
    })
}

/// Depth of nested containers below `node`, and whether every array is within the index limit.
fn shape(node: &Value) -> (usize, bool) {
    match node {
        Value::Object(map) => map.values().map(shape).fold((1, true), |(d, ok), (cd, cok)| (d.max(cd + 1), ok && cok)),
        Value::Array(items) => items
            .iter()
            .map(shape)
            .fold((1, items.len() <= MAX_BRACKET_INDEX + 1), |(d, ok), (cd, cok)| (d.max(cd + 1), ok && cok)),
        _ => (0, true),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(document) = Decoder::FormBrackets.decode(data) {
        assert!(document.is_object(), "a form decodes to an object");
        let (depth, indices_ok) = shape(&document);
        assert!(depth <= MAX_BRACKET_DEPTH, "nesting {depth} beyond the limit");
        assert!(indices_ok, "an array longer than the index limit");
    }
    let _ = Decoder::FormJson { field: "data[payload]".into() }.decode(data);
    for source in mappings() {
        for event in source.map(data).events {
            let again = decode(&encode_json(&event), Encoding::Json, Some(event.kind()));
            assert_eq!(again.as_ref(), Ok(&event), "a mapped event must survive its canonical JSON");
        }
    }
});
