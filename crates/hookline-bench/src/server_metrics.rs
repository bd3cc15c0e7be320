//! Reads hookline's `/metrics` (Prometheus text): the server-side view that helps explain
//! the client-side numbers (ack time, where deliveries went, spool depth and commits).

use crate::load;
use anyhow::{Result, bail};
use std::net::SocketAddr;

/// One sample line: name, label text (without braces) and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: String,
    value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerMetrics {
    samples: Vec<Sample>,
}

/// `GET /metrics` on `addr`, parsed.
pub(crate) async fn read(addr: SocketAddr) -> Result<ServerMetrics> {
    let (status, body) = load::get(addr, "/metrics").await?;
    if status != 200 {
        bail!("GET /metrics on {addr} answered {status}");
    }
    Ok(ServerMetrics::parse(&String::from_utf8_lossy(&body)))
}

impl ServerMetrics {
    /// Parses Prometheus text format (comments skipped, unparsable lines ignored).
    pub(crate) fn parse(text: &str) -> ServerMetrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.trim().parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some(Sample {
                    name: name.to_owned(),
                    labels: labels.to_owned(),
                    value,
                })
            })
            .collect();
        ServerMetrics { samples }
    }

    /// Sum of every series of `name` whose labels contain all of `labels` (`key="value"`).
    pub(crate) fn sum(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let mut found = None;
        for sample in &self.samples {
            if sample.name == name && labels.iter().all(|l| sample.labels.contains(l)) {
                *found.get_or_insert(0.0) += sample.value;
            }
        }
        found
    }

    /// Mean of a histogram (`_sum / _count`) over the matching series.
    pub(crate) fn histogram_mean(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let sum = self.sum(&format!("{name}_sum"), labels)?;
        let count = self.sum(&format!("{name}_count"), labels)?;
        (count > 0.0).then(|| sum / count)
    }

    /// Upper bound of the histogram bucket that holds quantile `q` (0..1).
    pub(crate) fn histogram_quantile_bound(
        &self,
        name: &str,
        labels: &[&str],
        q: f64,
    ) -> Option<f64> {
        let count = self.sum(&format!("{name}_count"), labels)?;
        if count <= 0.0 {
            return None;
        }
        let bucket = format!("{name}_bucket");
        let mut bounds: Vec<(f64, f64)> = Vec::new();
        for sample in &self.samples {
            if sample.name != bucket || !labels.iter().all(|l| sample.labels.contains(l)) {
                continue;
            }
            let le = sample
                .labels
                .split(',')
                .find_map(|pair| pair.trim().strip_prefix("le="))
                .map(|v| v.trim_matches('"'))
                .and_then(|v| {
                    if v == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        v.parse().ok()
                    }
                })?;
            match bounds.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, total)) => *total += sample.value,
                None => bounds.push((le, sample.value)),
            }
        }
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        bounds
            .into_iter()
            .find(|(_, cumulative)| *cumulative >= q * count)
            .map(|(bound, _)| bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE hookline_spool_depth gauge
hookline_spool_depth 0
hookline_ingress_requests_total{source="aisle",code="accepted",stored="broker"} 90
hookline_ingress_requests_total{source="aisle",code="accepted",stored="spool"} 10
hookline_ingress_ack_seconds_bucket{stored="broker",le="0.001"} 50
hookline_ingress_ack_seconds_bucket{stored="broker",le="0.005"} 99
hookline_ingress_ack_seconds_bucket{stored="broker",le="+Inf"} 100
hookline_ingress_ack_seconds_sum{stored="broker"} 0.2
hookline_ingress_ack_seconds_count{stored="broker"} 100
"#;

    #[test]
    fn reads_gauges_counters_and_histograms() {
        let m = ServerMetrics::parse(PAGE);
        assert_eq!(m.sum("hookline_spool_depth", &[]), Some(0.0));
        assert_eq!(m.sum("hookline_ingress_requests_total", &[]), Some(100.0));
        assert_eq!(
            m.sum("hookline_ingress_requests_total", &["stored=\"spool\""]),
            Some(10.0)
        );
        assert_eq!(m.sum("nope", &[]), None);
        let mean = m
            .histogram_mean("hookline_ingress_ack_seconds", &[])
            .unwrap_or_default();
        assert!((mean - 0.002).abs() < 1e-9);
        assert_eq!(
            m.histogram_quantile_bound("hookline_ingress_ack_seconds", &[], 0.99),
            Some(0.005)
        );
        assert_eq!(
            m.histogram_quantile_bound("hookline_ingress_ack_seconds", &[], 0.5),
            Some(0.001)
        );
    }
}
