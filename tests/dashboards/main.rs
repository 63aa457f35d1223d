//! Every Grafana dashboard in `deploy/grafana/dashboards/` parses, and every panel query is
//! valid PromQL naming metrics salespulse exports (docs/metrics.md, and a real scrape of the demo
//! daemon) or recording rules (deploy/prometheus/rules.yml).

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use serde_json::Value;

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/dashboards");
const METRICS_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/rules.yml");

/// Grafana's built-in variables that may appear in a query, and what stands in for them.
const BUILTINS: &[(&str, &str)] = &[("__rate_interval", "5m"), ("__interval", "5m"), ("__range", "5m")];

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = fs::read_dir(DASHBOARDS)
        .unwrap_or_else(|e| panic!("read {DASHBOARDS}: {e}"))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {DASHBOARDS}");
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()));
            Dashboard { file: file_name(&path), json }
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// All panels, with the panels nested in rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

/// The dashboard's template variables: name -> a value that is valid wherever the variable is
/// used (a duration for `window`, a regex-safe string for the label variables).
fn variables(d: &Dashboard) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for var in d.json["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_else(|| panic!("{}: a template variable without a name", d.file));
        let stand_in = match name {
            "window" => "1h",
            "datasource" => "prometheus",
            _ => ".*",
        };
        assert!(
            vars.insert(name.to_owned(), stand_in.to_owned()).is_none(),
            "{}: template variable {name} defined twice",
            d.file
        );
    }
    vars
}

/// Replaces `$name`, `${name}` and `${name:format}` by their stand-ins. A name that is neither a
/// template variable of the dashboard nor a built-in is an error.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let lookup = |name: &str| -> Result<String, String> {
        vars.get(name)
            .cloned()
            .or_else(|| BUILTINS.iter().find(|(b, _)| *b == name).map(|(_, v)| (*v).to_owned()))
            .ok_or_else(|| format!("undefined template variable ${name}"))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            out.push_str(&lookup(name)?);
            rest = &braced[end + 1..];
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if end == 0 {
                return Err(format!("a lone $ in {text:?}"));
            }
            out.push_str(&lookup(&after[..end])?);
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn metric_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(e) => {
            metric_names(&e.expr, out);
            if let Some(param) = &e.param {
                metric_names(param, out);
            }
        }
        Expr::Unary(e) => metric_names(&e.expr, out),
        Expr::Binary(e) => {
            metric_names(&e.lhs, out);
            metric_names(&e.rhs, out);
        }
        Expr::Paren(e) => metric_names(&e.expr, out),
        Expr::Subquery(e) => metric_names(&e.expr, out),
        Expr::VectorSelector(vs) => selector_name(vs, out),
        Expr::MatrixSelector(ms) => selector_name(&ms.vs, out),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| metric_names(arg, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_name(vs: &promql_parser::parser::VectorSelector, out: &mut BTreeSet<String>) {
    let name =
        vs.name.clone().or_else(|| vs.matchers.matchers.iter().find(|m| m.name == "__name__").map(|m| m.value.clone()));
    out.insert(name.unwrap_or_else(|| "<selector without a metric name>".to_owned()));
}

/// `name` occurs in `text` as a whole metric name (not as the prefix of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let before = text[..i].chars().next_back().is_none_or(|c| !is_name_char(c));
        let after = text[i + name.len()..].chars().next().is_none_or(|c| !is_name_char(c));
        before && after
    })
}

fn recording_rules() -> BTreeSet<String> {
    let text = fs::read_to_string(RULES).unwrap_or_else(|e| panic!("read {RULES}: {e}"));
    text.lines()
        .filter_map(|line| line.trim().trim_start_matches("- ").strip_prefix("record:"))
        .map(|name| name.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .collect()
}

/// The `vector(N)` of each `salespulse:threshold:<name>` rule.
fn alert_thresholds() -> BTreeMap<String, f64> {
    let text = fs::read_to_string(RULES).unwrap_or_else(|e| panic!("read {RULES}: {e}"));
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.trim_start_matches("- ").strip_prefix("record:") {
            current = name.trim().strip_prefix("salespulse:threshold:").map(str::to_owned);
        } else if let (Some(name), Some(expr)) = (&current, line.strip_prefix("expr:")) {
            let n = expr.trim().strip_prefix("vector(").and_then(|e| e.strip_suffix(')'));
            let n: f64 = n
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("threshold {name}: expected expr: vector(N), got {expr}"));
            out.insert(name.clone(), n);
            current = None;
        }
    }
    out
}

/// Every query of a dashboard: (where, expression) for panel targets and query variables.
fn queries(d: &Dashboard) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(&d.json) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: panel {:?}: a target without an expr", d.file, title(panel)));
            out.push((format!("panel {:?}", title(panel)), expr.to_owned()));
        }
    }
    for var in d.json["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| {
                panic!("{}: variable {}: expected label_values(<selector>, <label>), got {q:?}", d.file, var["name"])
            });
        out.push((format!("variable {}", var["name"]), inner.to_owned()));
    }
    out
}

#[test]
fn every_query_is_valid_promql_on_documented_metrics() {
    let doc = fs::read_to_string(METRICS_DOC).unwrap_or_else(|e| panic!("read {METRICS_DOC}: {e}"));
    let rules = recording_rules();
    assert!(rules.len() >= 10, "expected the recording rules of {RULES}, found {rules:?}");
    let mut checked = 0;
    for d in dashboards() {
        let vars = variables(&d);
        for (place, expr) in queries(&d) {
            let concrete = substitute(&expr, &vars).unwrap_or_else(|e| panic!("{}: {place}: {e} in {expr:?}", d.file));
            let ast = parser::parse(&concrete)
                .unwrap_or_else(|e| panic!("{}: {place}: invalid PromQL {expr:?} (as {concrete:?}): {e}", d.file));
            let mut names = BTreeSet::new();
            metric_names(&ast, &mut names);
            for name in names {
                let histogram_base = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix));
                let documented = mentions(&doc, &name)
                    || histogram_base.is_some_and(|base| mentions(&doc, &format!("`{base}` | histogram")))
                    || rules.contains(&name);
                assert!(
                    documented,
                    "{}: {place}: metric {name} in {expr:?} is neither in docs/metrics.md nor a \
                     recording rule of deploy/prometheus/rules.yml",
                    d.file
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} expressions checked");
    println!("checked {checked} expressions");
}

/// The metric names a scrape declares (`# TYPE name type`), with their types.
fn scraped_families(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn every_dashboard_metric_is_in_a_real_scrape() {
    // The demo writes every family's HELP and TYPE lines, samples or not.
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let address = listen.to_string();
    let mut daemon = support::Daemon::start(
        &["demo", "--listen", &address, "--managers", "6", "--events-per-second", "100"],
        &[("RUST_LOG", "warn")],
        listen,
    );
    let families = daemon.scrape_until("the demo's families", std::time::Duration::from_secs(60), |body| {
        let families = scraped_families(body);
        families.contains_key("salespulse_anomaly_score").then_some(families)
    });
    let rules = recording_rules();
    let mut checked = BTreeSet::new();
    for d in dashboards() {
        let vars = variables(&d);
        for (place, expr) in queries(&d) {
            let concrete = substitute(&expr, &vars).unwrap_or_else(|e| panic!("{}: {place}: {e} in {expr:?}", d.file));
            let Ok(ast) = parser::parse(&concrete) else { continue };
            let mut names = BTreeSet::new();
            metric_names(&ast, &mut names);
            for name in names {
                let histogram = ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| name.strip_suffix(suffix))
                    .any(|base| families.get(base).is_some_and(|t| t == "histogram"));
                // `up` and `ALERTS` come from Prometheus itself.
                let known = families.contains_key(&name)
                    || histogram
                    || rules.contains(&name)
                    || name == "up"
                    || name == "ALERTS";
                assert!(known, "{}: {place}: {name} is not in a scrape of the daemon nor a recording rule", d.file);
                checked.insert(name);
            }
        }
    }
    assert!(checked.len() > 20, "only {} metric names checked", checked.len());
    let status = daemon.terminate(std::time::Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        let f = &d.file;
        let uid = d.json["uid"].as_str().filter(|u| !u.is_empty()).unwrap_or_else(|| panic!("{f}: no uid"));
        assert!(uids.insert(uid.to_owned()), "{f}: uid {uid} used by another dashboard");
        assert!(d.json["title"].as_str().is_some_and(|t| !t.is_empty()), "{f}: no title");
        let schema = d.json["schemaVersion"].as_u64().unwrap_or(0);
        assert!(schema >= 38, "{f}: schemaVersion {schema}, expected Grafana 10 (38+)");

        let vars = variables(&d);
        assert!(vars.contains_key("datasource"), "{f}: no datasource variable");
        let mut ids = BTreeSet::new();
        for panel in panels(&d.json) {
            let t = title(panel);
            assert!(panel["id"].as_u64().is_some_and(|id| ids.insert(id)), "{f}: panel {t:?}: missing or duplicate id");
            assert!(panel["gridPos"].is_object(), "{f}: panel {t:?}: no gridPos");
            substitute(t, &vars).unwrap_or_else(|e| panic!("{f}: panel title {t:?}: {e}"));
            if panel["type"] == "row" {
                continue;
            }
            let ds = &panel["datasource"];
            assert!(ds["type"] == "prometheus" && ds["uid"] == "${datasource}", "{f}: panel {t:?}: datasource {ds}");
            let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
            for target in targets.unwrap_or_else(|| panic!("{f}: panel {t:?}: no targets")) {
                let ds = &target["datasource"];
                assert!(
                    ds["type"] == "prometheus" && ds["uid"] == "${datasource}",
                    "{f}: panel {t:?}: target datasource {ds}"
                );
                if let Some(legend) = target["legendFormat"].as_str() {
                    substitute(legend, &vars).unwrap_or_else(|e| panic!("{f}: panel {t:?}: legend: {e}"));
                }
            }
        }
    }
    assert!(uids.contains("salespulse-team") && uids.contains("salespulse-manager"), "{uids:?}");
}

/// The team overview's manager table colours cells at the alert limits of
/// deploy/prometheus/alerts.yml (the salespulse:threshold:* rules).
#[test]
fn team_table_colours_the_alert_limits() {
    let d = dashboards().into_iter().find(|d| d.json["uid"] == "salespulse-team").expect("the team dashboard");
    let vars = variables(&d);
    for (name, expected) in [("team", "query"), ("window", "custom"), ("datasource", "datasource")] {
        assert!(vars.contains_key(name), "team dashboard: no {name} variable");
        let var = d.json["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap();
        assert_eq!(var["type"], expected, "team dashboard: variable {name}");
    }
    let limits = alert_thresholds();
    let tables: Vec<&Value> = panels(&d.json).into_iter().filter(|p| p["type"] == "table").collect();
    let mut coloured = BTreeMap::new();
    for table in &tables {
        for o in table["fieldConfig"]["overrides"].as_array().into_iter().flatten() {
            for prop in o["properties"].as_array().into_iter().flatten() {
                if prop["id"] != "thresholds" {
                    continue;
                }
                for step in prop["value"]["steps"].as_array().into_iter().flatten() {
                    if let Some(v) = step["value"].as_f64() {
                        coloured.insert(o["matcher"]["options"].as_str().unwrap_or_default().to_owned(), v);
                    }
                }
            }
        }
    }
    assert!(!coloured.is_empty(), "team dashboard: no table panel with thresholds");
    for rule in ["oldest_wait_seconds", "response_p90_seconds", "tasks_overdue", "anomaly_score"] {
        let limit = limits.get(rule).unwrap_or_else(|| panic!("rules.yml: no salespulse:threshold:{rule}"));
        assert!(
            coloured.values().any(|v| v == limit),
            "team dashboard: no table column coloured at the {rule} limit {limit} (thresholds: {coloured:?})"
        );
    }
}

#[test]
fn substitution_rejects_unknown_variables() {
    let vars = BTreeMap::from([("team".to_owned(), ".*".to_owned()), ("window".to_owned(), "1h".to_owned())]);
    assert_eq!(
        substitute(r#"sum(rate(x{team=~"${team:regex}"}[$__rate_interval])) + y{window="$window"}"#, &vars).unwrap(),
        r#"sum(rate(x{team=~".*"}[5m])) + y{window="1h"}"#
    );
    assert!(substitute("x{manager=\"$manager\"}", &vars).is_err());
    assert!(mentions("`salespulse_window_calls` |", "salespulse_window_calls"));
    assert!(!mentions("`salespulse_window_calls` |", "salespulse_window_call"));
}
