//! Mapping + canonicalisation speed of typical webhooks (target: under 5 µs per webhook for a
//! single-event payload; see the speed section of docs/sources/README.md).

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use salespulse_sources::{Directory, Source};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn source(name: &str) -> Source {
    let directory = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/sources/managers.csv")).unwrap();
    let directory = Arc::new(Directory::parse(&directory).unwrap());
    Source::load(std::path::Path::new(&format!("{ROOT}/sources/{name}.toml")), directory).unwrap()
}

fn payload(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/tests/fixtures/sources/{name}")).unwrap()
}

fn map(c: &mut Criterion) {
    let mut group = c.benchmark_group("map");
    for (source_name, file) in [
        ("twilio", "twilio-status-completed.form"),
        ("bitrix24", "bitrix24-voximplant-call-end.form"),
        ("amocrm", "amocrm-lead-status.form"),
        ("asterisk", "asterisk-cdr.ami"),
        ("wazzup", "wazzup-messages.json"),
    ] {
        let source = source(source_name);
        let body = payload(file);
        let events = source.map(&body).events.len() as u64;
        assert!(events > 0);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{source_name}/{events}_events"), |b| {
            b.iter(|| black_box(source.map(black_box(&body))))
        });
    }
    group.finish();
}

criterion_group!(benches, map);
criterion_main!(benches);
