//! What a build Job and its Pods say: whether it finished and how, which attempt it is, how long
//! it took, and what its steps' termination messages (or logs) tell about a failure.

use super::super::desired::{self, LABEL_BUILD_ATTEMPT};
use super::super::types::Status;
use super::Context;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::ResourceExt;
use std::time::Duration;

/// `s`, or its last `max` bytes after `...` when longer.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// The last `n` non-empty lines of a log.
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    truncate(&tail, 1500)
}

/// `sha256:<64 hex>` from a termination message, if it is one.
pub fn parse_digest(message: &str) -> Option<String> {
    let digest: fnbuild::oci::digest::Digest = message.trim().parse().ok()?;
    Some(digest.into())
}

/// Whether a Job has finished: `Some(true)` succeeded, `Some(false)` failed.
pub fn job_outcome(job: &Job) -> Option<bool> {
    let st = job.status.as_ref()?;
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == Status::True.as_str())
    };
    if st.succeeded.unwrap_or(0) > 0 || cond("Complete") {
        Some(true)
    } else if st.failed.unwrap_or(0) > 0 || cond("Failed") {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn job_attempt(job: &Job) -> u32 {
    job.labels()
        .get(LABEL_BUILD_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// Seconds since the Job failed (its Failed condition), if known.
pub(crate) fn seconds_since_failure(job: &Job) -> Option<i64> {
    let st = job.status.as_ref()?;
    let c = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == Status::True.as_str())?;
    let t = c.last_transition_time.as_ref().or(c.last_probe_time.as_ref())?;
    Some(k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second())
}

/// The delay before retry `attempt + 1` of a failed build.
pub fn retry_delay(base_seconds: u64, attempt: u32) -> Duration {
    let d = base_seconds.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_secs(d.min(300))
}

pub(crate) fn build_seconds(job: &Job) -> Option<f64> {
    let st = job.status.as_ref()?;
    let (s, c) = (st.start_time.as_ref()?, st.completion_time.as_ref()?);
    Some((c.0.as_second() - s.0.as_second()).max(0) as f64)
}

/// What one terminated container of a build Pod said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMessage {
    pub pod: String,
    pub container: String,
    /// An init container (`prepare`, `install`): the build container never ran after it failed.
    pub init: bool,
    pub exit_code: i32,
    /// Its termination message (with FallbackToLogsOnError, the log's tail on failure); empty
    /// when it left none.
    pub message: String,
    /// The kubelet's reason (`Error`, `OOMKilled`, `DeadlineExceeded`, ...).
    pub reason: Option<String>,
}

/// The terminated containers of a build Pod: its failed init containers first (a succeeded
/// one says nothing worth reading), then every terminated container.
pub fn step_messages(pod: &Pod) -> Vec<StepMessage> {
    let name = pod.name_any();
    let mut out = Vec::new();
    let Some(st) = pod.status.as_ref() else {
        return out;
    };
    for (init, statuses) in [(true, &st.init_container_statuses), (false, &st.container_statuses)] {
        for cs in statuses.iter().flatten() {
            for state in [cs.state.as_ref(), cs.last_state.as_ref()].into_iter().flatten() {
                let Some(t) = &state.terminated else { continue };
                if init && t.exit_code == 0 {
                    continue;
                }
                out.push(StepMessage {
                    pod: name.clone(),
                    container: cs.name.clone(),
                    init,
                    exit_code: t.exit_code,
                    message: t.message.clone().unwrap_or_default(),
                    reason: t.reason.clone(),
                });
            }
        }
    }
    out
}

/// Why a build Job failed, from its steps' messages: the first step with something to say, named
/// when it is an init container; `None` when none said anything.
pub fn failure_detail(messages: &[StepMessage]) -> Option<String> {
    messages.iter().find_map(|m| {
        let mut text = log_tail(&m.message, 10);
        if text.is_empty() && m.init {
            // An init container killed before it wrote anything: the kubelet's reason.
            text = format!(
                "{} (exit code {})",
                m.reason.as_deref().unwrap_or("terminated"),
                m.exit_code
            );
        }
        if text.is_empty() {
            None
        } else if m.init {
            Some(format!("its {} step failed:\n{text}", m.container))
        } else {
            Some(format!("the builder's last lines:\n{text}"))
        }
    })
}

/// Terminated containers of a Job's Pods (see [`step_messages`]); a failed container without a
/// termination message gets its log's tail instead (needs a kubelet).
pub(crate) async fn job_messages(ctx: &Context, ns: &str, job: &str) -> Vec<StepMessage> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = match pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%ns, %job, error = %e, "cannot list the build's Pods");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for pod in list.items {
        let mut steps = step_messages(&pod);
        let silent = steps.iter().all(|m| m.message.trim().is_empty());
        for m in steps.iter_mut() {
            // No termination message: the log's tail. For the build container as before, when
            // the Pod said nothing at all; for a failed init container, always.
            if m.message.trim().is_empty() && (m.init || silent) {
                let lp = LogParams {
                    container: Some(m.container.clone()),
                    tail_lines: Some(20),
                    ..Default::default()
                };
                if let Ok(log) = pods.logs(&m.pod, &lp).await {
                    m.message = log;
                }
            }
        }
        if steps.is_empty() {
            // Not terminated as far as the Pod's status tells: whatever the log holds.
            let lp = LogParams {
                tail_lines: Some(20),
                ..Default::default()
            };
            if let Ok(log) = pods.logs(&pod.name_any(), &lp).await {
                steps.push(StepMessage {
                    pod: pod.name_any(),
                    container: desired::BUILD_CONTAINER.into(),
                    init: false,
                    exit_code: 0,
                    message: log,
                    reason: None,
                });
            }
        }
        out.extend(steps);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    #[test]
    fn digests_from_termination_messages() {
        let d = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(parse_digest(&format!("{d}\n")), Some(d.clone()));
        assert_eq!(parse_digest("sha256:abc"), None);
        assert_eq!(parse_digest(&d.to_uppercase()), None);
        assert_eq!(parse_digest("error: build failed"), None);
    }

    #[test]
    fn log_tails() {
        let log = (1..=30).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        assert_eq!(log_tail(&log, 3), "line 28\nline 29\nline 30");
        assert_eq!(log_tail("\n\n", 3), "");
        let long = "x".repeat(5000);
        assert_eq!(log_tail(&long, 3).len(), 1503);
    }

    fn build_pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello-build-abc-1-xyz"},
            "status": status,
        }))
        .unwrap()
    }

    fn terminated(name: &str, code: i32, reason: &str, message: Option<&str>) -> serde_json::Value {
        let mut t = serde_json::json!({"exitCode": code, "reason": reason});
        if let Some(m) = message {
            t["message"] = m.into();
        }
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "b", "imageID": "",
            "state": {"terminated": t}})
    }

    #[test]
    fn a_failed_init_container_says_why_the_build_failed() {
        let npm = "npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/left-padd";
        let pod = build_pod(serde_json::json!({
            "initContainerStatuses": [terminated("prepare", 0, "Completed", None), terminated("install", 1, "Error", Some(npm))],
            "containerStatuses": [{"name": "build", "ready": false, "restartCount": 0, "image": "b", "imageID": "",
                "state": {"waiting": {"reason": "PodInitializing"}}}],
        }));
        let steps = step_messages(&pod);
        assert_eq!(steps.len(), 1, "a succeeded init container says nothing: {steps:?}");
        assert_eq!(
            (steps[0].container.as_str(), steps[0].init, steps[0].exit_code),
            ("install", true, 1)
        );
        assert_eq!(steps[0].pod, "hello-build-abc-1-xyz");
        let d = failure_detail(&steps).unwrap();
        assert_eq!(d, format!("its install step failed:\n{npm}"));

        // Killed before it wrote a word: the kubelet's reason.
        let pod = build_pod(serde_json::json!({
            "initContainerStatuses": [terminated("prepare", 137, "OOMKilled", None)],
        }));
        assert_eq!(
            failure_detail(&step_messages(&pod)).unwrap(),
            "its prepare step failed:\nOOMKilled (exit code 137)"
        );

        // The build container, as before; a digest is read from it.
        let pod = build_pod(serde_json::json!({
            "initContainerStatuses": [terminated("prepare", 0, "Completed", None), terminated("install", 0, "Completed", None)],
            "containerStatuses": [terminated("build", 1, "Error", Some("error: push refused"))],
        }));
        let steps = step_messages(&pod);
        assert_eq!(
            failure_detail(&steps).unwrap(),
            "the builder's last lines:\nerror: push refused"
        );
        let d = format!("sha256:{}", "a1".repeat(32));
        let pod = build_pod(serde_json::json!({
            "containerStatuses": [terminated("build", 0, "Completed", Some(&d))],
        }));
        assert_eq!(
            step_messages(&pod).iter().find_map(|m| parse_digest(&m.message)),
            Some(d)
        );
        assert_eq!(failure_detail(&[]), None);
        assert_eq!(step_messages(&build_pod(serde_json::json!({}))), []);
    }

    #[test]
    fn retry_backoff() {
        assert_eq!(retry_delay(10, 1), Duration::from_secs(10));
        assert_eq!(retry_delay(10, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(10, 3), Duration::from_secs(40));
        assert_eq!(retry_delay(10, 50), Duration::from_secs(300));
    }

    #[test]
    fn job_outcomes() {
        let mut j = Job::default();
        assert_eq!(job_outcome(&j), None);
        j.status = Some(JobStatus {
            active: Some(1),
            ..Default::default()
        });
        assert_eq!(job_outcome(&j), None);
        j.status = Some(JobStatus {
            succeeded: Some(1),
            ..Default::default()
        });
        assert_eq!(job_outcome(&j), Some(true));
        j.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(job_outcome(&j), Some(false));
    }
}
