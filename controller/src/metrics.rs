//! The controller's metrics, in Prometheus' text format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the build-duration histogram's buckets.
const BUILD_BUCKETS: &[f64] = &[5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    /// Create, update, patch and delete requests to the API server (status and events included).
    pub api_writes: AtomicU64,
    pub builds_started: AtomicU64,
    pub builds_succeeded: AtomicU64,
    pub builds_failed: AtomicU64,
    /// Builds skipped because the registry already had the image.
    pub builds_skipped: AtomicU64,
    pub webhook_allowed: AtomicU64,
    pub webhook_denied: AtomicU64,
    pub webhook_errors: AtomicU64,
    /// `git ls-remote` runs (each a question to a git server).
    pub git_checks: AtomicU64,
    /// Signed push events from git hosts, and the Functions they had re-checked.
    pub git_pushes: AtomicU64,
    pub git_push_rechecks: AtomicU64,
    /// Requests to the git webhook refused (unsigned, forged, not a git host, no Secret).
    pub git_webhook_refused: AtomicU64,
    build_durations: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; 9],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn observe_build(&self, seconds: f64) {
        let mut h = self.build_durations.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in BUILD_BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "fnbuild_reconciles_total",
            "Function reconciles run.",
            Self::get(&self.reconciles),
        );
        counter(
            &mut o,
            "fnbuild_reconcile_errors_total",
            "Function reconciles that failed (and were retried).",
            Self::get(&self.reconcile_errors),
        );
        counter(
            &mut o,
            "fnbuild_api_writes_total",
            "Create, update, patch and delete requests sent to the API server.",
            Self::get(&self.api_writes),
        );
        counter(
            &mut o,
            "fnbuild_builds_started_total",
            "Build Jobs created.",
            Self::get(&self.builds_started),
        );
        counter(
            &mut o,
            "fnbuild_builds_succeeded_total",
            "Build Jobs that pushed an image.",
            Self::get(&self.builds_succeeded),
        );
        counter(
            &mut o,
            "fnbuild_builds_failed_total",
            "Build Jobs that failed.",
            Self::get(&self.builds_failed),
        );
        counter(
            &mut o,
            "fnbuild_builds_skipped_total",
            "Builds skipped because the registry had the image.",
            Self::get(&self.builds_skipped),
        );
        let _ = writeln!(o, "# HELP fnbuild_webhook_requests_total Admission requests answered.\n# TYPE fnbuild_webhook_requests_total counter");
        let _ = writeln!(
            o,
            "fnbuild_webhook_requests_total{{result=\"allowed\"}} {}",
            Self::get(&self.webhook_allowed)
        );
        let _ = writeln!(
            o,
            "fnbuild_webhook_requests_total{{result=\"denied\"}} {}",
            Self::get(&self.webhook_denied)
        );
        let _ = writeln!(
            o,
            "fnbuild_webhook_requests_total{{result=\"error\"}} {}",
            Self::get(&self.webhook_errors)
        );
        counter(
            &mut o,
            "fnbuild_git_checks_total",
            "References of Functions from git resolved by asking the git server (git ls-remote).",
            Self::get(&self.git_checks),
        );
        counter(
            &mut o,
            "fnbuild_git_push_events_total",
            "Signed push events received from git hosts.",
            Self::get(&self.git_pushes),
        );
        counter(
            &mut o,
            "fnbuild_git_push_rechecks_total",
            "Functions re-checked at once because of a push event.",
            Self::get(&self.git_push_rechecks),
        );
        counter(
            &mut o,
            "fnbuild_git_webhook_refused_total",
            "Requests to the git webhook refused: unsigned, wrongly signed, not from a git host, or to a namespace without the webhook Secret.",
            Self::get(&self.git_webhook_refused),
        );
        let h = self.build_durations.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(o, "# HELP fnbuild_build_duration_seconds Build Job run time, start to completion.\n# TYPE fnbuild_build_duration_seconds histogram");
        for (i, b) in BUILD_BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "fnbuild_build_duration_seconds_bucket{{le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(o, "fnbuild_build_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "fnbuild_build_duration_seconds_sum {}", h.sum);
        let _ = writeln!(o, "fnbuild_build_duration_seconds_count {}", h.count);
        o
    }
}

/// Read one unlabelled sample (or `name{labels}`) from a text exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        Metrics::inc(&m.reconciles);
        Metrics::inc(&m.reconciles);
        Metrics::inc(&m.webhook_denied);
        m.observe_build(7.5);
        m.observe_build(400.0);
        let t = m.render();
        assert_eq!(sample(&t, "fnbuild_reconciles_total"), Some(2.0));
        assert_eq!(sample(&t, "fnbuild_api_writes_total"), Some(0.0));
        assert_eq!(
            sample(&t, "fnbuild_webhook_requests_total{result=\"denied\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&t, "fnbuild_build_duration_seconds_bucket{le=\"5\"}"), Some(0.0));
        assert_eq!(
            sample(&t, "fnbuild_build_duration_seconds_bucket{le=\"10\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "fnbuild_build_duration_seconds_bucket{le=\"600\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&t, "fnbuild_build_duration_seconds_count"), Some(2.0));
        assert_eq!(sample(&t, "fnbuild_build_duration_seconds_sum"), Some(407.5));
    }
}
