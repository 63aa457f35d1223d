//! The alert thresholds the live page colours by, read from the recording rules this binary was
//! built with (`deploy/prometheus/rules.yml`, `salespulse:threshold:<name>` = `vector(<value>)`),
//! so the page and the alerts cannot drift apart: the rule file is the one place they live.

/// The rule file, embedded at build time.
const RULES: &str = include_str!("../../../deploy/prometheus/rules.yml");
const PREFIX: &str = "salespulse:threshold:";

/// Every `salespulse:threshold:<name>` of the embedded rule file as `(name, value)`, in file order.
pub fn thresholds() -> Vec<(String, f64)> {
    parse(RULES)
}

/// Reads `- record: salespulse:threshold:<name>` lines, each followed by `expr: vector(<number>)`.
fn parse(rules: &str) -> Vec<(String, f64)> {
    let mut found = Vec::new();
    let mut pending: Option<&str> = None;
    for line in rules.lines().map(str::trim) {
        if let Some(record) = line.strip_prefix("- record:").map(str::trim) {
            pending = record.strip_prefix(PREFIX);
            continue;
        }
        let Some(name) = pending else { continue };
        if let Some(expr) = line.strip_prefix("expr:").map(str::trim) {
            let number = expr.strip_prefix("vector(").and_then(|rest| rest.strip_suffix(')'));
            if let Some(value) = number.and_then(|n| n.trim().parse::<f64>().ok()) {
                found.push((name.to_owned(), value));
            }
            pending = None;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rule_file_has_every_threshold_the_page_uses() {
        let found = thresholds();
        for (name, value) in [
            ("response_p90_seconds", 600.0),
            ("anomaly_score", 3.0),
            ("oldest_wait_seconds", 900.0),
            ("tasks_overdue", 5.0),
            ("calls_unlogged_2h", 3.0),
            ("events_rejected_ratio", 0.05),
            ("events_late_ratio", 0.05),
        ] {
            assert!(found.contains(&(name.to_owned(), value)), "{name} = {value} not in {found:?}");
        }
    }

    #[test]
    fn parse_reads_only_threshold_constants() {
        let rules = "groups:\n  - name: x\n    rules:\n      - record: salespulse:threshold:a\n        expr: vector(1.5)\n      - record: other:thing\n        expr: vector(2)\n      - record: salespulse:threshold:b\n        expr: sum(x)\n      - record: salespulse:threshold:c\n        expr: vector(7)\n";
        assert_eq!(parse(rules), [("a".to_owned(), 1.5), ("c".to_owned(), 7.0)]);
    }
}
