//! Rendering metric families in the Prometheus text format (0.0.4) and in OpenMetrics 1.0.
//!
//! The per-manager families are rendered straight from a snapshot of the state into one string:
//! no intermediate metric objects, no per-sample allocation beyond the output buffer.

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Chooses the format from an HTTP `Accept` header: OpenMetrics when the client lists it
    /// (Prometheus does, ahead of the text format), the text format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best = (Format::Text, -1.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let quality = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            let format = match media.as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "*/*" | "text/*" => Format::Text,
                _ => continue,
            };
            if quality > best.1 || (quality == best.1 && format == Format::OpenMetrics) {
                best = (format, quality);
            }
        }
        if best.1 <= 0.0 {
            Format::Text
        } else {
            best.0
        }
    }
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic; sample names end in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets with `_bucket`, `_sum` and `_count` samples.
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Builds one exposition body.
#[derive(Debug)]
pub struct MetricWriter {
    format: Format,
    out: String,
    /// Families left out of this body (as named to [`MetricWriter::family`]).
    skip: Vec<String>,
    /// The family being written is one of `skip`: its lines are dropped.
    skipping: bool,
}

impl MetricWriter {
    /// An empty body in `format`.
    pub fn new(format: Format) -> Self {
        Self::with_capacity(format, 64 * 1024)
    }

    /// An empty body in `format` with room for `bytes` (the previous scrape's size, say).
    pub fn with_capacity(format: Format, bytes: usize) -> Self {
        MetricWriter { format, out: String::with_capacity(bytes), skip: Vec::new(), skipping: false }
    }

    /// Leaves the families named in `names` out of the body: their `HELP`/`TYPE` lines and
    /// every sample written until the next family starts.
    pub fn skip_families(&mut self, names: &[&str]) {
        self.skip = names.iter().map(|name| name.to_string()).collect();
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Starts a family: its `HELP` and `TYPE` lines. `name` is the sample name of a counter
    /// (with `_total`) or of a gauge; for OpenMetrics the family name of a counter drops `_total`.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        self.skipping = self.skip.iter().any(|skipped| skipped == name);
        if self.skipping {
            return;
        }
        let family = match (self.format, kind) {
            (Format::OpenMetrics, MetricType::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.out.push_str("# HELP ");
        self.out.push_str(family);
        self.out.push(' ');
        escape_help(&mut self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(family);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// Writes one sample line whose first labels are `prefix`, rendered once by [`label_prefix`]
    /// (a manager's `manager` and `team`, written on every one of its samples).
    pub fn sample_prefixed(&mut self, name: &str, prefix: &str, labels: &[(&str, &str)], value: f64) {
        if self.skipping {
            return;
        }
        if prefix.is_empty() {
            return self.sample(name, labels, value);
        }
        self.out.push_str(name);
        self.out.push('{');
        self.out.push_str(prefix);
        for (key, value) in labels {
            self.out.push(',');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_label(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push_str("} ");
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// Writes one sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if self.skipping {
            return;
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_label(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// Appends an already rendered body in the same format (without an OpenMetrics `# EOF`).
    pub fn raw(&mut self, body: &str) {
        self.skipping = false;
        self.out.push_str(body);
    }

    /// The finished body.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Renders labels once, for [`MetricWriter::sample_prefixed`]: `manager="ivanov",team="north"`.
pub fn label_prefix(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        escape_label(&mut out, value);
        out.push('"');
    }
    out
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        // Integral values print without a fraction, as counters usually are.
        out.push_str(itoa::Buffer::new().format(value as i64));
    } else {
        // Shortest representation that reads back to the same f64.
        out.push_str(ryu::Buffer::new().format_finite(value));
    }
}

fn escape_label(out: &mut String, value: &str) {
    // Label values almost never need escaping: copy them whole when they do not.
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counter_family() {
        let mut w = MetricWriter::new(Format::Text);
        w.family("x_calls_total", "Calls.", MetricType::Counter);
        w.sample("x_calls_total", &[("manager", "a\"b\\c\nd")], 3.0);
        w.sample("x_calls_total", &[], 0.5);
        assert_eq!(
            w.finish(),
            "# HELP x_calls_total Calls.\n# TYPE x_calls_total counter\n\
             x_calls_total{manager=\"a\\\"b\\\\c\\nd\"} 3\nx_calls_total 0.5\n"
        );
    }

    #[test]
    fn openmetrics_counter_family_drops_total_and_ends_with_eof() {
        let mut w = MetricWriter::new(Format::OpenMetrics);
        w.family("x_calls_total", "Calls.", MetricType::Counter);
        w.sample("x_calls_total", &[], 1.0);
        assert_eq!(w.finish(), "# HELP x_calls Calls.\n# TYPE x_calls counter\nx_calls_total 1\n# EOF\n");
    }

    #[test]
    fn prefixed_samples_equal_plain_ones() {
        let prefix = label_prefix(&[("manager", "a\"b"), ("team", "north")]);
        let mut plain = MetricWriter::new(Format::Text);
        let mut fast = MetricWriter::new(Format::Text);
        for extra in [&[][..], &[("window", "5m")][..], &[("direction", "in"), ("window", "1h")][..]] {
            let mut labels = vec![("manager", "a\"b"), ("team", "north")];
            labels.extend_from_slice(extra);
            plain.sample("x", &labels, 1.5);
            fast.sample_prefixed("x", &prefix, extra, 1.5);
        }
        fast.sample_prefixed("y", "", &[("k", "v")], 2.0);
        plain.sample("y", &[("k", "v")], 2.0);
        assert_eq!(fast.finish(), plain.finish());
    }

    #[test]
    fn skipped_families_leave_no_line_and_the_rest_is_unchanged() {
        let write = |out: &mut MetricWriter| {
            out.family("a_total", "A.", MetricType::Counter);
            out.sample("a_total", &[("x", "1")], 1.0);
            out.family("b", "B.", MetricType::Gauge);
            out.sample_prefixed("b", "manager=\"m\"", &[], 2.0);
            out.sample("b", &[], 3.0);
            out.family("c", "C.", MetricType::Gauge);
            out.sample("c", &[], 4.0);
        };
        let mut every = MetricWriter::new(Format::OpenMetrics);
        write(&mut every);
        let mut some = MetricWriter::new(Format::OpenMetrics);
        some.skip_families(&["b", "not_written"]);
        write(&mut some);
        let every = every.finish();
        let without_b: String =
            every.lines().filter(|l| !l.starts_with("b") && !l.contains(" b ")).map(|l| format!("{l}\n")).collect();
        assert_eq!(some.finish(), without_b);
        assert!(every.contains("b{manager=\"m\"} 2\n"));
    }

    #[test]
    fn special_values() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20, 2.25, -3.0] {
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 1e20 2.25 -3 ");
    }

    #[test]
    fn accept_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, expected) in [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text; q=0"), Format::Text),
            (Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"), Format::Text),
            (Some("garbage;;;q=zz"), Format::Text),
        ] {
            assert_eq!(Format::from_accept(accept), expected, "{accept:?}");
        }
    }
}
