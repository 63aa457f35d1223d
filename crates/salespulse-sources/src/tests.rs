//! Golden tests of the shipped mappings (`sources/*.toml`) on the sample payloads in
//! `tests/fixtures/sources/`, plus the language's behaviour on awkward cases.

use super::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn directory() -> Arc<Directory> {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/sources/managers.csv")).unwrap();
    Arc::new(Directory::parse(&text).unwrap())
}

fn shipped(name: &str) -> Source {
    Source::load(Path::new(&format!("{ROOT}/sources/{name}.toml")), directory()).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/tests/fixtures/sources/{name}")).unwrap()
}

/// Maps the payloads in order with one source and compares the canonical JSON of every event
/// (one line each, `#` lines name the payload) with `<golden>.golden.jsonl`.
fn golden(source: &str, payloads: &[&str], golden: &str) {
    let source = shipped(source);
    let mut out = String::new();
    for payload in payloads {
        let mapped = source.map(&fixture(payload));
        assert!(mapped.errors.is_empty(), "{payload}: {:?}", mapped.errors);
        out.push_str(&format!("# {payload}\n"));
        for event in &mapped.events {
            out.push_str(std::str::from_utf8(&salespulse_events::encode_json(event)).unwrap());
            out.push('\n');
        }
    }
    let path = format!("{ROOT}/tests/fixtures/sources/{golden}.golden.jsonl");
    if std::env::var_os("SALESPULSE_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(out, expected, "{golden}: run with SALESPULSE_BLESS=1 to rewrite, then review the diff");
}

#[test]
fn twilio_terminal_statuses_only() {
    golden("twilio", &["twilio-status-ringing.form", "twilio-status-completed.form"], "twilio");
}

#[test]
fn asterisk_cdr_answered_and_unanswered_in_local_time() {
    golden("asterisk", &["asterisk-cdr.ami"], "asterisk");
}

#[test]
fn bitrix24_call_end_and_missed() {
    golden("bitrix24", &["bitrix24-voximplant-call-end.form", "bitrix24-missed.form"], "bitrix24");
}

#[test]
fn wazzup_batch_with_statuses_and_ping() {
    golden("wazzup", &["wazzup-test.json", "wazzup-messages.json"], "wazzup");
}

#[test]
fn amocrm_status_notes_and_task_history() {
    golden(
        "amocrm",
        &[
            "amocrm-lead-status.form",
            "amocrm-note.form",
            "amocrm-task-update.form",
            "amocrm-task-moved.form",
            "amocrm-task-touched.form",
            "amocrm-task-done.form",
        ],
        "amocrm",
    );
}

#[test]
fn every_shipped_mapping_compiles_and_the_directory_parses() {
    let sources =
        Sources::load(Path::new(&format!("{ROOT}/sources")), Some(Path::new(&format!("{ROOT}/sources/managers.csv"))))
            .unwrap();
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["amocrm", "asterisk", "bitrix24", "twilio", "wazzup"]);
    let registry = prometheus::Registry::new();
    sources.register_metrics(&registry).unwrap();
    let twilio = sources.get("twilio").unwrap();
    assert_eq!(twilio.map(&fixture("twilio-status-completed.form")).events.len(), 1);
    assert_eq!(twilio.map(b"CallStatus=completed").errors.len(), 1);
    let families = registry.gather();
    let value = |name: &str, rule: &str| {
        families
            .iter()
            .find(|f| f.name() == name)
            .and_then(|f| {
                f.get_metric().iter().find(|m| {
                    m.get_label().iter().any(|l| l.value() == "twilio")
                        && m.get_label().iter().any(|l| l.value() == rule)
                })
            })
            .map(|m| m.get_counter().get_value())
    };
    assert_eq!(value("salespulse_source_events_total", "call_end"), Some(1.0));
    assert_eq!(value("salespulse_source_errors_total", "call_end"), Some(1.0));
    assert_eq!(value("salespulse_source_errors_total", DECODE_RULE), Some(0.0));
}

#[test]
fn every_mappable_field_is_a_contract_field() {
    for kind in [Kind::Call, Kind::Message, Kind::CardChange] {
        for name in COMMON_FIELDS.iter().chain(kind_fields(kind)) {
            assert!(salespulse_events::Field::from_key(name).is_some(), "{name}");
        }
    }
}

fn inline(rules: &str) -> Source {
    let text = format!("source = \"t\"\ndecoder = \"json\"\n{rules}");
    Source::compile(&text, directory()).unwrap()
}

const MESSAGE_RULE: &str = r#"
[[rules]]
name = "m"
kind = "message"
each = "$.items[*]"
[rules.fields]
event_id = "@.id"
occurred_at = "time(@.at + 1714557590, 'unix_s')"
manager_id = "'m-1'"
message_id = "@.id"
dialog_id = "'d'"
channel = "'telegram'"
direction = "@.dir"
"#;

#[test]
fn one_bad_item_does_not_lose_the_others() {
    let source = inline(MESSAGE_RULE);
    let mapped = source.map(
        br#"{"items":[{"id":"a","at":1,"dir":"inbound"},{"id":"b","at":"x","dir":"inbound"},
        {"id":"c","at":3,"dir":"sideways"},{"id":"d","at":4,"dir":"outbound"}]}"#,
    );
    let ids: Vec<&str> = mapped.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
    assert_eq!(mapped.errors.len(), 2);
    let first = &mapped.errors[0];
    assert_eq!((first.rule.as_str(), first.field.as_deref()), ("m", Some("occurred_at")));
    assert_eq!(first.expression.as_deref(), Some("time(@.at + 1714557590, 'unix_s')"));
    assert_eq!(first.problem, "+: not a number");
    assert_eq!(first.value.as_deref(), Some("Str(\"x\")"));
    // The log form never carries the value; the offline form does.
    assert!(!first.to_string().contains("\"x\""), "{first}");
    assert!(first.detailed().contains("Str(\"x\")"));
    let second = &mapped.errors[1];
    assert_eq!(second.field.as_deref(), Some("direction"));
    assert!(second.problem.contains("invalid event"), "{second}");
    let broken = source.map(b"{not json");
    assert_eq!((broken.events.len(), broken.errors[0].rule.as_str()), (0, DECODE_RULE));
}

#[test]
fn compile_errors_name_the_place() {
    let base = "source = \"t\"\ndecoder = \"json\"\n";
    for (text, needle) in [
        ("source = \"t\"\ndecoder = \"yaml\"\nrules = []\n", "unknown decoder"),
        ("source = \"t t\"\ndecoder = \"json\"\nrules = []\n", "letters, digits"),
        ("source = \"t\"\ndecoder = \"form_json\"\nrules = []\n", "json_field"),
        ("source = \"t\"\ndecoder = \"json\"\ntime_zone = \"Mars/Base\"\nrules = []\n", "Mars/Base"),
        ("source = \"t\"\ndecoder = \"json\"\nrules = []\n", "no [[rules]]"),
        ("source = \"t\"\ndecoder = \"json\"\nextra = 1\nrules = []\n", "unknown field"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"fax\"\nfields = {{}}\n"), "unknown kind"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"call\"\nfields.colour = \"1\"\n"), "field `colour`"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"call\"\nfields.event_id = \"$.a +\"\n"), "field `event_id`"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"call\"\nfields.event_id = \"$.a\"\n"), "`occurred_at` is required"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"call\"\nwhen = \"previous\"\nfields.event_id = \"$.a\"\nfields.occurred_at = \"1\"\nfields.manager_id = \"'m'\"\n"), "without `remember`"),
        (&format!("{base}[[rules]]\nname = \"r\"\nkind = \"call\"\neach = \"items\"\nfields = {{}}\n"), "`each`"),
        (&format!("{base}[[rules]]\nname = \"decode\"\nkind = \"call\"\nfields = {{}}\n"), "reserved"),
        (&format!("{base}[auth]\nscheme = \"token\"\nsecret_env = \"X\"\n[[rules]]\nname = \"r\"\nkind = \"call\"\nfields = {{}}\n"), "exactly one"),
    ] {
        let error = Source::compile(text, directory()).unwrap_err().to_string();
        assert!(error.contains(needle), "{text}\n-> {error}");
    }
}

/// A `card_change` rule about deal `$.deal` of manager `m-1`: `head` holds the rule's other
/// keys (`remember`, `when`), `fields` the other fields.
fn deal_rule(name: &str, head: &str, fields: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\nkind = \"card_change\"\n{head}\n[rules.fields]\n\
         manager_id = \"'m-1'\"\ncard_id = \"$.deal\"\ncard_type = \"'deal'\"\n{fields}\n"
    )
}

/// Deals that report only their new stage: `stage_from` comes from the remembered value.
fn stage_rule() -> String {
    deal_rule(
        "stage",
        "remember = { entity = \"$.deal\", value = \"$.stage\" }\nwhen = \"previous != current\"",
        r#"event_id = "concat($.deal, ':', $.at)"
occurred_at = "time($.at + 1714557590, 'unix_s')"
change = "if(previous == null, 'created', 'stage_changed')"
stage_from = "previous"
stage_to = "current""#,
    )
}

/// The payload of deal `deal` reaching `stage` at second `at`.
fn stage_payload(deal: &str, stage: &str, at: u32) -> String {
    format!(r#"{{"deal":"{deal}","stage":"{stage}","at":{at}}}"#)
}

/// (change, stage_from, stage_to) of each card change.
fn transitions(mapped: Mapped) -> Vec<(&'static str, Option<String>, Option<String>)> {
    mapped
        .events
        .into_iter()
        .map(|e| match e.body {
            salespulse_events::EventBody::CardChange(c) => (c.change.as_str(), c.stage_from, c.stage_to),
            _ => unreachable!("the rule makes card changes"),
        })
        .collect()
}

#[test]
fn remembered_values_make_transitions_and_unchanged_values_none() {
    let source = inline(&stage_rule());
    let step = |deal: &str, stage: &str, at: u32| transitions(source.map(stage_payload(deal, stage, at).as_bytes()));
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(step("d1", "new", 1), [("created", None, s("new"))]);
    assert_eq!(step("d1", "new", 2), []);
    assert_eq!(step("d2", "new", 3), [("created", None, s("new"))]);
    assert_eq!(step("d1", "offer", 4), [("stage_changed", s("new"), s("offer"))]);
    assert_eq!(step("d1", "offer", 5), []);
    assert_eq!(source.remembered(), 2);
}

#[test]
fn memory_is_bounded_per_source() {
    let rule = deal_rule(
        "stage",
        "remember = { entity = \"$.deal\", value = \"$.stage\" }",
        "event_id = \"$.deal\"\noccurred_at = \"time($.at + 1714557590, 'unix_s')\"\nchange = \"'updated'\"",
    );
    let text = format!("source = \"t\"\ndecoder = \"json\"\nremember_capacity = 100\n{rule}");
    let source = Source::compile(&text, directory()).unwrap();
    for i in 0..1000 {
        let mapped = source.map(format!(r#"{{"deal":"d{i}","stage":"s","at":1}}"#).as_bytes());
        assert_eq!(mapped.events.len(), 1);
        assert!(source.remembered() <= 100);
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        // Every shipped mapping, fed arbitrary bytes and mangled samples, returns errors or
        // events and never panics.
        #[test]
        fn shipped_mappings_on_arbitrary_input(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                               cut in 0usize..2000, flip in any::<u8>()) {
            for (name, sample) in [("twilio", "twilio-status-completed.form"), ("asterisk", "asterisk-cdr.ami"),
                                   ("bitrix24", "bitrix24-voximplant-call-end.form"), ("wazzup", "wazzup-messages.json"),
                                   ("amocrm", "amocrm-lead-status.form")] {
                let source = shipped(name);
                let _ = source.map(&bytes);
                let mut mangled = fixture(sample);
                if !mangled.is_empty() {
                    let i = cut % mangled.len();
                    mangled[i] ^= flip;
                    mangled.truncate(cut.max(i + 1));
                }
                let _ = source.map(&mangled);
            }
        }
    }
}

#[test]
fn contract_1_1_card_fields_map() {
    let source = inline(&deal_rule(
        "payment",
        "",
        r#"event_id = "$.id"
occurred_at = "time($.at, 'unix_s')"
change = "'payment_received'"
amount = "$.sum"
margin = "$.margin"
invoice_id = "$.invoice"
currency = "'RUB'""#,
    ));
    let mapped =
        source.map(br#"{"id":"p1","at":1714557590,"deal":"d1","sum":"1500.50","margin":"300","invoice":"inv-7"}"#);
    assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
    let salespulse_events::EventBody::CardChange(change) = &mapped.events[0].body else { unreachable!() };
    assert_eq!(change.change.as_str(), "payment_received");
    assert_eq!((change.amount, change.margin), (Some(1500.5), Some(300.0)));
    assert_eq!((change.invoice_id.as_deref(), change.currency.as_deref()), (Some("inv-7"), Some("RUB")));
}

/// A daemon's life with a restart: the records of one partition are mapped at their offsets; the
/// process stops after offset `stop` (its snapshot written then), and the next one loads the
/// snapshot and its rebuild replays from offset `replay_from`, then goes on live. The events of
/// the replayed and live records must be those of an uninterrupted run.
#[test]
fn a_restart_with_the_snapshot_gives_the_transitions_of_an_uninterrupted_run() {
    let records = [
        ("d1", "new", 1),
        ("d2", "new", 2),
        ("d1", "offer", 3),
        ("d1", "offer", 4),
        ("d2", "offer", 5),
        ("d1", "contract", 6),
        ("d2", "offer", 7),
        ("d2", "won", 8),
    ];
    let payloads: Vec<String> = records.iter().map(|(deal, stage, at)| stage_payload(deal, stage, *at)).collect();
    let at = |offset: usize| Some(Position::new("raw-crm", 0, offset as i64));
    let dir = std::env::temp_dir().join(format!("salespulse-sources-restart-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("mappings/crm.toml"), format!("source = \"crm\"\ndecoder = \"json\"\n{}", stage_rule()))
        .unwrap();
    let load = || Sources::load(&dir.join("mappings"), None).unwrap();
    let map_range = |sources: &Sources, range: std::ops::Range<usize>| {
        let source = sources.get("crm").unwrap();
        range.map(|offset| transitions(source.map_at(payloads[offset].as_bytes(), at(offset)))).collect::<Vec<_>>()
    };
    let uninterrupted = map_range(&load(), 0..records.len());
    for (stop, replay_from) in [(4, 2), (4, 4), (5, 1), (2, 0), (7, 5)] {
        let first = load();
        assert_eq!(map_range(&first, 0..stop + 1), uninterrupted[..=stop]);
        let (snapshot, entities) = first.memory_snapshot();
        assert_eq!(entities, 2);
        let second = load();
        assert_eq!(second.restore_memory(&snapshot).unwrap(), 2);
        assert_eq!(
            map_range(&second, replay_from..records.len()),
            uninterrupted[replay_from..],
            "stopped after {stop}, replayed from {replay_from}"
        );
    }
    // Without the snapshot, d2's change at offset 4 (set before the replay at 1) is lost: the
    // test would notice a snapshot that did not carry it.
    let forgetful = map_range(&load(), 2..records.len());
    assert_ne!(forgetful, uninterrupted[2..]);
    // A damaged snapshot is an error, not a panic or half a restore.
    let damaged = load();
    assert!(damaged.restore_memory(b"{\"version\": 1, \"sources\": 7}").is_err());
    assert!(damaged
        .restore_memory(b"{\"version\": 2, \"sources\": {}}")
        .unwrap_err()
        .to_string()
        .contains("version 2"));
    assert_eq!(damaged.get("crm").unwrap().remembered(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
