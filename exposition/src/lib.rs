//! The Prometheus exposition of a [`Registry`], in the format the scraper asks for.
//!
//! `prometheus-client` encodes OpenMetrics, which Prometheus asks for in its `Accept` header.
//! Other readers (`promtool check metrics`, the classic text parsers in many agents, `curl`)
//! read the classic text format (0.0.4), where a counter's family is named with its `_total`
//! suffix and there are no `# UNIT`, `_created` or `# EOF` lines. [`encode`] derives that
//! format from the encoder's own output, so every sample line is the encoder's.

use prometheus_client::registry::Registry;
use std::collections::HashSet;

/// The exposition format of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics when it names it (as Prometheus
    /// does), the classic text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Encodes every metric of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut open = String::new();
    prometheus_client::encoding::text::encode(&mut open, registry)?;
    Ok(match format {
        Format::OpenMetrics => open,
        Format::Text => classic(&open),
    })
}

/// The classic text format of an OpenMetrics exposition.
fn classic(open: &str) -> String {
    let counters: HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, tail) = (parts.next(), parts.next(), parts.next());
            match (keyword, name) {
                (Some("HELP"), Some(name)) => {
                    let help = tail.unwrap_or_default().replace("\\\"", "\"");
                    out.push_str(&format!("# HELP {} {help}\n", family(&counters, name)));
                }
                (Some("TYPE"), Some(name)) => {
                    let kind = match tail.unwrap_or_default() {
                        k @ ("counter" | "gauge" | "histogram" | "summary") => k,
                        _ => "untyped",
                    };
                    out.push_str(&format!("# TYPE {} {kind}\n", family(&counters, name)));
                }
                // `# UNIT` and `# EOF` have no classic counterpart.
                _ => {}
            }
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let created = name
            .strip_suffix("_created")
            .is_some_and(|base| counters.contains(base));
        if !created {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A family's classic name: a counter's carries `_total`.
fn family(counters: &HashSet<&str>, name: &str) -> String {
    if counters.contains(name) {
        format!("{name}_total")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("demo");
        let c = Counter::<u64>::default();
        c.inc();
        r.register("calls", "Calls, \"quoted\"", c);
        let g = Gauge::<i64>::default();
        g.set(3);
        r.register("depth", "Depth", g);
        let h = Histogram::new([0.5, 1.0]);
        h.observe(0.7);
        r.register("latency_seconds", "Latency", h);
        r
    }

    #[test]
    fn the_classic_format_names_counter_families_with_total() {
        let text = encode(&registry(), Format::Text).unwrap();
        assert!(
            text.contains("# HELP demo_calls_total Calls, \"quoted\".\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE demo_calls_total counter\ndemo_calls_total 1\n"));
        assert!(
            text.contains("# TYPE demo_depth gauge\ndemo_depth 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE demo_latency_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_is_the_encoders_output() {
        let text = encode(&registry(), Format::OpenMetrics).unwrap();
        assert!(
            text.contains("# TYPE demo_calls counter\ndemo_calls_total 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn prometheus_gets_openmetrics_and_others_the_classic_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert!(
            Format::Text
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }
}
