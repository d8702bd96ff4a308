//! The reconcile loop: from a Function to its ConfigMap, build Job, Deployment, Service and
//! HorizontalPodAutoscaler, and back to its status.
//!
//! Owned objects are read from watch caches (reflector stores, filtered by the managed-by label)
//! and written only when they differ from the desired ones (`compare::contains`), so a reconcile
//! with nothing changed sends no write to the API server. Every write is counted in
//! `fnbuild_api_writes_total`.

use super::compare;
use super::defaults::apply_defaults;
use super::desired::{self, BuildInputs, LABEL_BUILD_ATTEMPT, LABEL_IMAGE_TAG, LABEL_UUID};
use super::metrics::Metrics;
use super::settings::Settings;
use super::types::{condition, now_rfc3339, reason, Function, FunctionStatus, Status};
use super::validation::validate;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "fnbuild-controller";
/// How long a build Job this process created counts as running while the Job cache does not
/// show it (the cache lags the API server by milliseconds; a Job deleted meanwhile must not hold
/// a build slot for long).
const RECENT_BUILD_WINDOW: Duration = Duration::from_secs(15);
/// A reconcile with nothing to wait for still runs this often.
const RESYNC: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {namespace}/{name} exists and is not owned by Function {function}; delete or rename it")]
    NotOwned {
        kind: String,
        namespace: String,
        name: String,
        function: String,
    },
}

/// Watch caches of the objects Functions own.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Store<ConfigMap>,
    pub jobs: Store<Job>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// Asks the push registry whether it has an image: before a build (which it then skips) and
    /// while one runs (which it then takes as done); `None` never asks.
    pub registry: Option<fnbuild::registry::Client>,
    pub stores: Stores,
    pub recorder: Option<Recorder>,
    pub metrics: Arc<Metrics>,
    /// Build Jobs created by this process that the Job cache may not show yet (`ns/name` → when,
    /// and the uid of their Function).
    recent_builds: tokio::sync::Mutex<HashMap<String, (Instant, String)>>,
    /// Build Jobs (`ns/name`) whose image the registry showed while they still ran: done, so
    /// they take no build slot while their Pods wind down.
    pushed_jobs: std::sync::Mutex<HashSet<String>>,
    /// Jobs (by uid) whose outcome has been counted in the metrics.
    counted_jobs: std::sync::Mutex<HashSet<String>>,
    /// Images known for (Function uid, tag): a reconcile working from a stale copy of the
    /// Function (its status not yet showing the image) neither asks the registry again nor
    /// repeats the event.
    known_images: std::sync::Mutex<HashMap<(String, String), (String, &'static str, String)>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        registry: Option<fnbuild::registry::Client>,
        stores: Stores,
        recorder: Option<Recorder>,
        metrics: Arc<Metrics>,
    ) -> Context {
        Context {
            client,
            settings,
            registry,
            stores,
            recorder,
            metrics,
            recent_builds: Default::default(),
            pushed_jobs: Default::default(),
            counted_jobs: Default::default(),
            known_images: Default::default(),
        }
    }

    fn remember_image(&self, f: &Function, tag: &str, image: &str, reason: &'static str, message: &str) {
        let key = (f.uid().unwrap_or_default(), tag.to_string());
        self.known_images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (image.to_string(), reason, message.to_string()));
    }

    fn known_image(&self, f: &Function, tag: &str) -> Option<(String, &'static str, String)> {
        let key = (f.uid().unwrap_or_default(), tag.to_string());
        self.known_images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    fn wrote(&self) {
        Metrics::inc(&self.metrics.api_writes);
    }

    /// Count a finished Job once.
    fn first_time(&self, job: &Job) -> bool {
        let uid = job.uid().unwrap_or_default();
        self.counted_jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(uid)
    }

    async fn event(&self, f: &Function, type_: EventType, reason: &str, note: String) {
        let Some(rec) = &self.recorder else { return };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.wrote();
        if let Err(e) = rec.publish(&ev, &f.object_ref(&())).await {
            tracing::warn!(function = %f.name_any(), error = %e, "cannot record an event");
        }
    }
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Created,
    Updated,
}

fn owned_by(meta: &kube::core::ObjectMeta, f: &Function) -> bool {
    let uid = f.uid().unwrap_or_default();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Make the live object contain `want`: nothing when it already does, else a server-side apply
/// (which also creates it). An object of that name not owned by the Function is left alone.
async fn ensure<K>(ctx: &Context, f: &Function, store: &Store<K>, want: &K) -> Result<(Outcome, K), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let ns = f.namespace().unwrap_or_default();
    let name = want.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let live = match store.get(&ObjectRef::new(&name).within(&ns)) {
        Some(o) => Some((*o).clone()),
        // Not in the cache (not ours, or the cache lags): ask the API server.
        None => api.get_opt(&name).await?,
    };
    let outcome = match &live {
        Some(l) if !owned_by(l.meta(), f) => {
            return Err(Error::NotOwned {
                kind: K::kind(&()).to_string(),
                namespace: ns,
                name,
                function: f.name_any(),
            })
        }
        Some(l) => match compare::contains(l, want) {
            Ok(()) => return Ok((Outcome::Unchanged, l.clone())),
            Err(path) => {
                tracing::debug!(function = %f.name_any(), kind = %K::kind(&()), %name, differs = %path, "updating");
                Outcome::Updated
            }
        },
        None => Outcome::Created,
    };
    ctx.wrote();
    let applied = api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(want))
        .await?;
    Ok((outcome, applied))
}

async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    ctx.wrote();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn truncate(s: &str, max: usize) -> String {
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
    let m = message.trim();
    let hex = m.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then(|| m.to_string())
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

fn job_attempt(job: &Job) -> u32 {
    job.labels()
        .get(LABEL_BUILD_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// Seconds since the Job failed (its Failed condition), if known.
fn seconds_since_failure(job: &Job) -> Option<i64> {
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

fn build_seconds(job: &Job) -> Option<f64> {
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
async fn job_messages(ctx: &Context, ns: &str, job: &str) -> Vec<StepMessage> {
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

/// The outcome of the build step.
struct BuildStep {
    requeue: Option<Duration>,
}

pub async fn reconcile(f: Arc<Function>, ctx: Arc<Context>) -> Result<Action, Error> {
    Metrics::inc(&ctx.metrics.reconciles);
    // Decisions need complete caches (after a restart the first Functions arrive before them).
    let st = &ctx.stores;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let _ = st.config_maps.wait_until_ready().await;
        let _ = st.jobs.wait_until_ready().await;
        let _ = st.deployments.wait_until_ready().await;
        let _ = st.services.wait_until_ready().await;
        let _ = st.hpas.wait_until_ready().await;
    })
    .await;
    if f.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector delete the rest.
        return Ok(Action::await_change());
    }
    let name = f.name_any();
    let ns = f.namespace().unwrap_or_default();
    let mut func = (*f).clone();
    apply_defaults(&mut func.spec, &ctx.settings.defaults);
    let old = f.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let now = now_rfc3339();
    status.observed_generation = f.metadata.generation;

    let result = reconcile_spec(&func, &ctx, &mut status, &now).await;
    if status != old {
        let api: Api<Function> = Api::namespaced(ctx.client.clone(), &ns);
        ctx.wrote();
        let patch = serde_json::json!({ "status": status_patch(&old, &status) });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(function = %name, namespace = %ns, conditions = ?status.conditions.iter().map(|c| format!("{}={}/{}", c.type_, c.status, c.reason.as_deref().unwrap_or(""))).collect::<Vec<_>>(), "status");
    }
    result
}

/// ConfigurationReady=False with `reason` and `msg`, and a Warning event when the message is new
/// (a retry of the same failure writes no event).
async fn configuration_failed(
    ctx: &Context,
    f: &Function,
    status: &mut FunctionStatus,
    reason: &str,
    msg: String,
    now: &str,
) {
    let changed = status
        .condition(condition::CONFIGURATION_READY)
        .and_then(|c| c.message.as_deref())
        != Some(msg.as_str());
    status.set_condition(condition::CONFIGURATION_READY, Status::False, reason, msg.clone(), now);
    if changed {
        ctx.event(f, EventType::Warning, reason, msg).await;
    }
}

async fn reconcile_spec(f: &Function, ctx: &Context, status: &mut FunctionStatus, now: &str) -> Result<Action, Error> {
    let name = f.name_any();
    let ns = f.namespace().unwrap_or_default();
    let s = &ctx.settings;

    // 1. The spec: the same validation as the webhook's, for Functions that bypassed it.
    if let Err(e) = validate(Some(&name), &f.spec) {
        configuration_failed(ctx, f, status, reason::INVALID_FUNCTION_SPEC, e.to_string(), now).await;
        return Ok(Action::await_change());
    }
    if f.spec.source.inline.is_none() {
        status.set_condition(
            condition::CONFIGURATION_READY,
            Status::False,
            reason::SOURCE_NOT_SUPPORTED,
            "gitRepository sources are not supported by this controller yet; use an inline source",
            now,
        );
        return Ok(Action::await_change());
    }

    // 2. The source ConfigMap.
    let (outcome, _) = match ensure(ctx, f, &ctx.stores.config_maps, &desired::config_map(f)).await {
        Ok(done) => done,
        Err(e) => {
            // Admission refuses what cannot fit; what the API server refuses besides (a quota, a
            // policy) goes into the status and an event too, not only the log.
            configuration_failed(
                ctx,
                f,
                status,
                reason::CONFIGMAP_ERROR,
                format!("ConfigMap {name}: {e}"),
                now,
            )
            .await;
            return Err(e);
        }
    };
    let cm_reason = match outcome {
        Outcome::Created => Some(reason::CONFIGMAP_CREATED),
        Outcome::Updated => Some(reason::CONFIGMAP_UPDATED),
        Outcome::Unchanged => None,
    };
    let cfg_true = status
        .condition(condition::CONFIGURATION_READY)
        .is_some_and(|c| c.status == Status::True.as_str());
    if let Some(r) = cm_reason {
        status.set_condition(
            condition::CONFIGURATION_READY,
            Status::True,
            r,
            format!("ConfigMap {name} holds the source"),
            now,
        );
        ctx.event(f, EventType::Normal, r, format!("ConfigMap {name} holds the source"))
            .await;
    } else if !cfg_true {
        // (Also what a reconcile working from a stale copy of the Function sees: the same as the
        // reconcile that created the ConfigMap wrote, so no flapping.)
        status.set_condition(
            condition::CONFIGURATION_READY,
            Status::True,
            reason::CONFIGMAP_CREATED,
            format!("ConfigMap {name} holds the source"),
            now,
        );
    }
    status.runtime = Some(f.spec.runtime.clone());
    status.function_resource_profile = desired::function_resources(f, s).1;
    status.build_resource_profile = desired::build_resources(f, s).1;

    // 3. The image: reuse, find in the registry, or build.
    let (base_for_tag, base_arg) = desired::base_image(f, s);
    let tag = desired::image_tag(f, &base_for_tag);
    let step = build(f, ctx, status, &tag, base_arg, now).await?;

    // 4. Run the latest image.
    if let Some(image) = status.runtime_image.clone() {
        run(f, ctx, status, &image, now).await?;
    }
    let _ = ns;
    Ok(match step.requeue {
        Some(d) => Action::requeue(d),
        None => Action::requeue(RESYNC),
    })
}

async fn build(
    f: &Function,
    ctx: &Context,
    status: &mut FunctionStatus,
    tag: &str,
    base_arg: Option<String>,
    now: &str,
) -> Result<BuildStep, Error> {
    let name = f.name_any();
    let ns = f.namespace().unwrap_or_default();
    let uid = f.uid().unwrap_or_default();
    let s = &ctx.settings;
    let jobs: Vec<Arc<Job>> = ctx
        .stores
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()) && j.labels().get(LABEL_UUID) == Some(&uid))
        .collect();
    // Jobs for other tags are old: the inputs changed since.
    for old in jobs
        .iter()
        .filter(|j| j.labels().get(LABEL_IMAGE_TAG).map(String::as_str) != Some(tag))
    {
        tracing::info!(function = %name, job = %old.name_any(), "deleting an old build Job");
        delete::<Job>(ctx, &ns, &old.name_any()).await?;
    }
    if status.image_tag.as_deref() != Some(tag) {
        if let Some((image, r, msg)) = ctx.known_image(f, tag) {
            status.runtime_image = Some(image);
            status.image_tag = Some(tag.to_string());
            status.set_condition(condition::BUILD_READY, Status::True, r, msg, now);
        }
    }
    if status.image_tag.as_deref() == Some(tag) && status.runtime_image.is_some() {
        if !status
            .condition(condition::BUILD_READY)
            .is_some_and(|c| c.status == Status::True.as_str())
        {
            status.set_condition(
                condition::BUILD_READY,
                Status::True,
                reason::JOB_FINISHED,
                format!("image {tag} is built"),
                now,
            );
        }
        return Ok(BuildStep { requeue: None });
    }
    let latest = jobs
        .iter()
        .filter(|j| j.labels().get(LABEL_IMAGE_TAG).map(String::as_str) == Some(tag))
        .max_by_key(|j| job_attempt(j))
        .cloned();
    let Some(job) = latest else {
        // No Job yet: the registry may have the image already (same inputs, built before).
        let push = desired::push_reference(f, s, tag);
        let existing = registry_digest(ctx, &push).await.unwrap_or_else(|e| {
            tracing::warn!(image = %push, error = %e, "cannot ask the registry for the image; building it");
            None
        });
        if let Some(digest) = existing {
            let image = desired::pull_image(f, s, &digest);
            Metrics::inc(&ctx.metrics.builds_skipped);
            let msg = format!("the registry already has {push}; running {image}");
            return Ok(image_ready(ctx, f, status, tag, image, reason::IMAGE_EXISTS, msg, now).await);
        }
        return start_build(f, ctx, status, tag, base_arg, 1, now).await;
    };
    let job_name = job.name_any();
    match job_outcome(&job) {
        None => {
            // The builder puts the manifest last, under this tag: once the registry has the tag,
            // the image is complete. That shows a second or so before the Job does (the kubelet
            // notices a container's exit at its next look, up to a second later, and the Job
            // controller follows), so the registry is asked while the Job runs.
            let push = desired::push_reference(f, s, tag);
            // Quietly: the Job's own outcome settles the build when the registry cannot be asked.
            let pushed = registry_digest(ctx, &push).await.unwrap_or_else(|e| {
                tracing::debug!(image = %push, error = %e, "cannot ask the registry for the build's image");
                None
            });
            if let Some(digest) = pushed {
                let image = desired::pull_image(f, s, &digest);
                Metrics::inc(&ctx.metrics.builds_succeeded);
                ctx.pushed_jobs.lock().unwrap().insert(format!("{ns}/{job_name}"));
                let msg = format!("Job {job_name} pushed {image}");
                return Ok(image_ready(ctx, f, status, tag, image, reason::JOB_FINISHED, msg, now).await);
            }
            status.set_condition(
                condition::BUILD_READY,
                Status::Unknown,
                reason::JOB_RUNNING,
                format!("Job {job_name} is building image {tag}"),
                now,
            );
            Ok(BuildStep {
                requeue: ctx.registry.as_ref().map(|_| push_poll_interval(&job)),
            })
        }
        Some(true) => {
            let messages = job_messages(ctx, &ns, &job_name).await;
            match messages.iter().find_map(|m| parse_digest(&m.message)) {
                Some(digest) => {
                    let image = desired::pull_image(f, s, &digest);
                    if ctx.first_time(&job) {
                        Metrics::inc(&ctx.metrics.builds_succeeded);
                        if let Some(secs) = build_seconds(&job) {
                            ctx.metrics.observe_build(secs);
                        }
                    }
                    let msg = format!("Job {job_name} built {image}");
                    Ok(image_ready(ctx, f, status, tag, image, reason::JOB_FINISHED, msg, now).await)
                }
                None => {
                    let detail = "it succeeded but its Pod's termination message holds no image digest".to_string();
                    failed(f, ctx, status, &job, tag, base_arg, detail, now).await
                }
            }
        }
        Some(false) => {
            let messages = job_messages(ctx, &ns, &job_name).await;
            let detail = match failure_detail(&messages) {
                Some(d) => d,
                None => {
                    let why = job
                        .status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .find(|c| c.type_ == "Failed")
                        .and_then(|c| c.message.clone().or(c.reason.clone()))
                        .unwrap_or_else(|| "no log available".into());
                    format!("{why}")
                }
            };
            failed(f, ctx, status, &job, tag, base_arg, detail, now).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn failed(
    f: &Function,
    ctx: &Context,
    status: &mut FunctionStatus,
    job: &Job,
    tag: &str,
    base_arg: Option<String>,
    detail: String,
    now: &str,
) -> Result<BuildStep, Error> {
    let job_name = job.name_any();
    let attempt = job_attempt(job);
    let delay = retry_delay(ctx.settings.build_retry_seconds, attempt);
    let since = seconds_since_failure(job).unwrap_or(i64::MAX);
    let msg = format!("Job {job_name} failed: {detail}");
    if ctx.first_time(job) {
        Metrics::inc(&ctx.metrics.builds_failed);
        if let Some(secs) = build_seconds(job) {
            ctx.metrics.observe_build(secs);
        }
        ctx.event(f, EventType::Warning, reason::JOB_FAILED, msg.clone()).await;
    }
    status.set_condition(
        condition::BUILD_READY,
        Status::False,
        reason::JOB_FAILED,
        truncate(&msg, 2000),
        now,
    );
    let wait = delay.as_secs() as i64 - since;
    if wait > 0 {
        return Ok(BuildStep {
            requeue: Some(Duration::from_secs(wait as u64)),
        });
    }
    // Retry: a new Job, the failed one removed.
    let step = start_build(f, ctx, status, tag, base_arg, attempt + 1, now).await?;
    if status
        .condition(condition::BUILD_READY)
        .is_some_and(|c| c.reason.as_deref() == Some(reason::JOB_CREATED))
    {
        delete::<Job>(ctx, &f.namespace().unwrap_or_default(), &job_name).await?;
        // Keep the failure visible next to the retry.
        let c = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition::BUILD_READY)
            .expect("just set");
        c.message = Some(truncate(&format!("retry {} after: {msg}", attempt + 1), 2000));
    }
    Ok(step)
}

/// The digest the push registry has for `reference`: `Ok(None)` when it has none (or no
/// registry is asked), `Err` when it cannot be asked.
async fn registry_digest(ctx: &Context, reference: &str) -> Result<Option<String>, fnbuild::registry::RegistryError> {
    let (Some(client), Ok(r)) = (
        ctx.registry.as_ref(),
        reference.parse::<fnbuild::reference::Reference>(),
    ) else {
        return Ok(None);
    };
    match client.pull_manifest(&r).await {
        Ok(m) => Ok(Some(m.index_digest.unwrap_or(m.digest))),
        Err(fnbuild::registry::RegistryError::ManifestUnknown { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The build's image is known: into the status (BuildReady=True, by `reason`), the memory of
/// recent images and an event.
#[allow(clippy::too_many_arguments)]
async fn image_ready(
    ctx: &Context,
    f: &Function,
    status: &mut FunctionStatus,
    tag: &str,
    image: String,
    reason: &'static str,
    msg: String,
    now: &str,
) -> BuildStep {
    status.runtime_image = Some(image.clone());
    status.image_tag = Some(tag.to_string());
    ctx.remember_image(f, tag, &image, reason, &msg);
    status.set_condition(condition::BUILD_READY, Status::True, reason, msg.clone(), now);
    ctx.event(f, EventType::Normal, reason, msg).await;
    BuildStep { requeue: None }
}

/// How soon to ask the registry again for a running build's image: often while most builds
/// finish (a function without dependencies takes well under a second), then less and less.
fn push_poll_interval(job: &Job) -> Duration {
    let age = job.metadata.creation_timestamp.as_ref().map_or(0, |t| {
        (k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second()).max(0)
    });
    match age {
        0..=9 => Duration::from_millis(200),
        10..=59 => Duration::from_secs(1),
        _ => Duration::from_secs(5),
    }
}

/// Whether a Job is still running (one being deleted no longer counts).
fn active(job: &Job) -> bool {
    job_outcome(job).is_none() && job.metadata.deletion_timestamp.is_none()
}

async fn start_build(
    f: &Function,
    ctx: &Context,
    status: &mut FunctionStatus,
    tag: &str,
    base: Option<String>,
    attempt: u32,
    now: &str,
) -> Result<BuildStep, Error> {
    let ns = f.namespace().unwrap_or_default();
    let s = &ctx.settings;
    let mut recent = ctx.recent_builds.lock().await;
    let uid = f.uid().unwrap_or_default();
    let running: HashSet<String> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .filter(|j| {
            j.labels().get(desired::LABEL_MANAGED_BY).map(String::as_str) == Some(desired::MANAGED_BY) && active(j)
        })
        // This Function's Jobs for other inputs were deleted just now (the store may not show
        // it yet); one whose image the registry already showed may still be winding down.
        .filter(|j| j.labels().get(LABEL_UUID) != Some(&uid))
        .map(|j| format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any()))
        .collect();
    let running: HashSet<String> = {
        let mut pushed = ctx.pushed_jobs.lock().unwrap();
        pushed.retain(|k| running.contains(k));
        running.difference(&pushed).cloned().collect()
    };
    let known: HashSet<String> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .map(|j| format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any()))
        .collect();
    recent.retain(|k, (t, _)| t.elapsed() < RECENT_BUILD_WINDOW && !known.contains(k));
    let busy = running.len() + recent.values().filter(|(_, owner)| *owner != uid).count();
    if busy >= s.max_concurrent_builds {
        status.set_condition(
            condition::BUILD_READY,
            Status::Unknown,
            reason::JOB_QUEUED,
            format!(
                "waiting for a build slot ({busy} of {} builds running)",
                s.max_concurrent_builds
            ),
            now,
        );
        return Ok(BuildStep {
            requeue: Some(Duration::from_secs(5)),
        });
    }
    // The package registry's files, when the Secret is there.
    let (mut npmrc, mut pip_conf) = (false, false);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match secrets.get_opt(&s.package_registry_secret).await {
        Ok(Some(secret)) => {
            let has = |k: &str| {
                secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || secret.string_data.as_ref().is_some_and(|d| d.contains_key(k))
            };
            let node = f.spec.runtime.starts_with("nodejs");
            npmrc = node && has(".npmrc");
            pip_conf = !node && has("pip.conf");
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(namespace = %ns, error = %e, "cannot read the package registry Secret; building without it")
        }
    }
    // The dependency cache's signing key: the namespace's, made now if it has none.
    let mut cache_key = false;
    if s.dependency_cache {
        match secrets.get_opt(&s.cache_key_secret).await {
            Ok(Some(secret)) => {
                let k = super::settings::CACHE_KEY_SECRET_KEY;
                cache_key = secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || secret.string_data.as_ref().is_some_and(|d| d.contains_key(k));
            }
            Ok(None) => match super::cache_key::create(&ctx.client, &ns, &s.cache_key_secret).await {
                Ok(()) => cache_key = true,
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "cannot create the cache key Secret; building without the registry cache")
                }
            },
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "cannot read the cache key Secret; building without the registry cache")
            }
        }
    }
    let inputs = BuildInputs {
        tag: tag.to_string(),
        attempt,
        base,
        npmrc,
        pip_conf,
        cache_key,
    };
    let job = desired::build_job(f, s, &inputs);
    let job_name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.wrote();
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &job,
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    recent.insert(format!("{ns}/{job_name}"), (Instant::now(), uid));
    drop(recent);
    Metrics::inc(&ctx.metrics.builds_started);
    let msg = format!("Job {job_name} builds image {tag} (attempt {attempt})");
    status.set_condition(
        condition::BUILD_READY,
        Status::Unknown,
        reason::JOB_CREATED,
        msg.clone(),
        now,
    );
    ctx.event(f, EventType::Normal, reason::JOB_CREATED, msg).await;
    tracing::info!(function = %f.name_any(), namespace = %ns, job = %job_name, %tag, attempt, "build Job created");
    Ok(BuildStep { requeue: None })
}

/// Deployment, Service and HPA for `image`, and the Running condition.
async fn run(f: &Function, ctx: &Context, status: &mut FunctionStatus, image: &str, now: &str) -> Result<(), Error> {
    let name = f.name_any();
    let ns = f.namespace().unwrap_or_default();
    let s = &ctx.settings;
    let (d_outcome, dep) = ensure(ctx, f, &ctx.stores.deployments, &desired::deployment(f, s, image)).await?;
    match d_outcome {
        Outcome::Created => {
            ctx.event(
                f,
                EventType::Normal,
                reason::DEPLOYMENT_CREATED,
                format!("Deployment {name} runs {image}"),
            )
            .await
        }
        Outcome::Updated => {
            ctx.event(
                f,
                EventType::Normal,
                reason::DEPLOYMENT_UPDATED,
                format!("Deployment {name} updated"),
            )
            .await
        }
        Outcome::Unchanged => {}
    }
    let (svc_outcome, _) = ensure(ctx, f, &ctx.stores.services, &desired::service(f)).await?;
    if svc_outcome != Outcome::Unchanged {
        ctx.event(
            f,
            EventType::Normal,
            reason::SERVICE_CREATED,
            format!("Service {name} serves port 80"),
        )
        .await;
    }
    match desired::hpa(f, s) {
        Some(h) => {
            let (o, _) = ensure(ctx, f, &ctx.stores.hpas, &h).await?;
            if o != Outcome::Unchanged {
                ctx.event(
                    f,
                    EventType::Normal,
                    reason::HPA_CREATED,
                    format!("HorizontalPodAutoscaler {name} scales the Function"),
                )
                .await;
            }
        }
        None => {
            if ctx
                .stores
                .hpas
                .get(&ObjectRef::new(&name).within(&ns))
                .is_some_and(|h| owned_by(h.meta(), f))
            {
                delete::<HorizontalPodAutoscaler>(ctx, &ns, &name).await?;
            }
        }
    }
    status.pod_selector = Some(desired::pod_selector(f));
    status.replicas = Some(dep.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    let (st, r, msg) = deployment_state(&dep);
    status.set_condition(condition::RUNNING, st, r, msg, now);
    Ok(())
}

/// Running's status, reason and message from a Deployment.
pub fn deployment_state(d: &Deployment) -> (Status, &'static str, String) {
    let name = d.name_any();
    let Some(st) = &d.status else {
        return (
            Status::Unknown,
            reason::DEPLOYMENT_WAITING,
            format!("Deployment {name} has no status yet"),
        );
    };
    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return (
            Status::Unknown,
            reason::DEPLOYMENT_WAITING,
            format!("Deployment {name}: waiting for the rollout to start"),
        );
    }
    let cond = |t: &str| st.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some(t));
    if let Some(p) = cond("Progressing") {
        if p.status.as_deref() == Some(Status::False.as_str()) {
            let why = p.message.clone().unwrap_or_default();
            return (
                Status::False,
                reason::DEPLOYMENT_FAILED,
                format!("Deployment {name} is not progressing: {why}"),
            );
        }
    }
    let want = d.spec.replicas.unwrap_or(1);
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    if cond("Available").is_some_and(|c| c.status.as_deref() == Some(Status::True.as_str()))
        && updated >= want
        && available >= want
    {
        return (
            Status::True,
            reason::DEPLOYMENT_READY,
            format!("Deployment {name} is ready ({available} of {want} replicas available)"),
        );
    }
    (
        Status::Unknown,
        reason::DEPLOYMENT_WAITING,
        format!("Deployment {name}: {available} of {want} replicas available, {updated} updated"),
    )
}

/// The status as a merge patch: fields that went away are set to null (a merge patch leaves
/// out-of-patch fields as they were, which would make the next reconcile write again).
pub fn status_patch(old: &FunctionStatus, new: &FunctionStatus) -> serde_json::Value {
    let mut patch = serde_json::to_value(new).unwrap_or_default();
    if let (Some(p), Ok(serde_json::Value::Object(o))) = (patch.as_object_mut(), serde_json::to_value(old)) {
        for k in o.keys() {
            p.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// A failed reconcile: logged, counted, retried after a while; other Functions go on.
pub fn error_policy(f: Arc<Function>, e: &Error, ctx: Arc<Context>) -> Action {
    Metrics::inc(&ctx.metrics.reconcile_errors);
    tracing::warn!(function = %f.name_any(), namespace = %f.namespace().unwrap_or_default(), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
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
    fn status_patch_clears_fields_that_went_away() {
        let old = FunctionStatus {
            function_resource_profile: Some("L".into()),
            replicas: Some(1),
            ..Default::default()
        };
        let new = FunctionStatus {
            replicas: Some(2),
            ..Default::default()
        };
        assert_eq!(
            status_patch(&old, &new),
            serde_json::json!({"functionResourceProfile": null, "replicas": 2})
        );
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

    #[test]
    fn running_from_deployment() {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        d.metadata.name = Some("f".into());
        d.metadata.generation = Some(2);
        assert_eq!(deployment_state(&d).0, Status::Unknown);
        let avail = DeploymentCondition {
            type_: Some("Available".into()),
            status: Some("True".into()),
            ..Default::default()
        };
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            available_replicas: Some(2),
            updated_replicas: Some(2),
            conditions: Some(vec![avail.clone()]),
            ..Default::default()
        });
        assert_eq!(deployment_state(&d).1, reason::DEPLOYMENT_WAITING, "old generation");
        d.status.as_mut().unwrap().observed_generation = Some(2);
        let (st, r, msg) = deployment_state(&d);
        assert_eq!((st, r), (Status::True, reason::DEPLOYMENT_READY));
        assert_eq!(msg, "Deployment f is ready (2 of 2 replicas available)");
        d.status.as_mut().unwrap().available_replicas = Some(1);
        assert_eq!(deployment_state(&d).0, Status::Unknown);
        d.status.as_mut().unwrap().conditions = Some(vec![
            avail,
            DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("False".into()),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("too slow".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            deployment_state(&d),
            (
                Status::False,
                reason::DEPLOYMENT_FAILED,
                "Deployment f is not progressing: too slow".into()
            )
        );
    }
}
