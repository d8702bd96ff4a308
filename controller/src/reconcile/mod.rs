//! The reconcile loop: from a Function to its ConfigMap, build Job, Deployment, Service and
//! HorizontalPodAutoscaler, and back to its status.
//!
//! One reconcile of one Function is a [`Reconciling`]: the Function (defaults applied), the
//! controller's shared [`Context`], the time, and the status its steps write; each step is a
//! method (the spec and ConfigMap here, the image in `build.rs`, the workload in `run.rs`).
//! Owned objects are read from watch caches (reflector stores, filtered by the managed-by label)
//! and written only when they differ from the desired ones (`objects.rs`), so a reconcile with
//! nothing changed sends no write to the API server. Every write is counted in
//! `fnbuild_api_writes_total`.

mod build;
mod git;
mod job;
mod objects;
mod platforms;
mod registry_config;
mod run;
mod takeover;

pub use job::{failure_detail, job_outcome, log_tail, parse_digest, retry_delay, step_messages, StepMessage};
pub use objects::Outcome;
pub use platforms::of_nodes as node_platforms;
pub use run::deployment_state;

use super::defaults::apply_defaults;
use super::desired;
use super::events::{Note, Recorder};
use super::metrics::Metrics;
use super::settings::Settings;
use super::types::{condition, now_rfc3339, reason, runtime_deprecation, Function, FunctionStatus, Status};
use super::validation::validate;
use job::truncate;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "fnbuild-controller";
/// How long a build Job this process created counts as running while the Job cache does not
/// show it (the cache lags the API server by milliseconds; a Job deleted meanwhile must not hold
/// a build slot for long).
pub(crate) const RECENT_BUILD_WINDOW: Duration = Duration::from_secs(15);
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

/// An image known for a Function's tag: the image, the reason and message it was reported with.
type KnownImage = (String, &'static str, String);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// Asks the push registry whether it has an image: before a build (which it then skips) and
    /// while one runs (which it then takes as done); `None` never asks.
    pub registry: Option<fnbuild::registry::Client>,
    pub stores: Stores,
    /// The registry Secret in `--registry-config-namespace` (a watch cache of that one Secret),
    /// copied into each namespace with Functions; `None`: no copying.
    pub registry_base: Option<Store<k8s_openapi::api::core::v1::Secret>>,
    pub recorder: Option<Recorder>,
    pub metrics: Arc<Metrics>,
    /// Build Jobs created by this process that the Job cache may not show yet (`ns/name` → when,
    /// and the uid of their Function).
    pub(crate) recent_builds: tokio::sync::Mutex<HashMap<String, (Instant, String)>>,
    /// Build Jobs (`ns/name`) whose image the registry showed while they still ran: done, so
    /// they take no build slot while their Pods wind down.
    pub(crate) pushed_jobs: std::sync::Mutex<HashSet<String>>,
    /// Jobs (by uid) whose outcome has been counted in the metrics.
    counted_jobs: std::sync::Mutex<HashSet<String>>,
    /// Images known for (Function uid, tag): a reconcile working from a stale copy of the
    /// Function (its status not yet showing the image) neither asks the registry again nor
    /// repeats the event.
    known_images: std::sync::Mutex<HashMap<(String, String), KnownImage>>,
    /// Commits lately resolved (repository, reference, credentials → when, commit): the
    /// reconciles that follow one at once (its own status write, its Job's events) and other
    /// Functions on the same repository ask the server once.
    pub(crate) git_heads: std::sync::Mutex<HashMap<String, (Instant, String)>>,
    /// Repositories (by `git_webhook::repository_key`) a signed push event named, and when: a
    /// commit resolved before that is not reused.
    pub(crate) git_pushes: std::sync::Mutex<HashMap<String, Instant>>,
    /// Per question (as `git_heads`), the turn of the reconcile asking the server now.
    pub(crate) git_asking: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per Function (uid), the value of its `fnbuild.dev/recheck` annotation last acted on.
    pub(crate) rechecks: std::sync::Mutex<HashMap<String, String>>,
    /// Per Function (uid), its last check of its git source: what was asked (repository,
    /// reference, Secret), when, and the commit.
    pub(crate) git_checks: std::sync::Mutex<HashMap<String, (String, Instant, String)>>,
    /// Functions from git (uid) whose dependencies a build found to need an install step.
    pub(crate) git_install_step: std::sync::Mutex<HashSet<String>>,
    /// The nodes' platforms, and when they were asked (`platforms.rs`).
    node_platforms: std::sync::Mutex<Option<(Instant, Vec<String>)>>,
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
            registry_base: None,
            recorder,
            metrics,
            recent_builds: Default::default(),
            pushed_jobs: Default::default(),
            counted_jobs: Default::default(),
            known_images: Default::default(),
            git_heads: Default::default(),
            git_pushes: Default::default(),
            rechecks: Default::default(),
            git_asking: Default::default(),
            git_checks: Default::default(),
            git_install_step: Default::default(),
            node_platforms: Default::default(),
        }
    }

    /// A push to these repositories was announced: their Functions' next check asks the server.
    pub fn git_pushed(&self, repositories: &[String]) {
        let now = Instant::now();
        let mut pushes = self.git_pushes.lock().unwrap_or_else(|p| p.into_inner());
        for r in repositories {
            pushes.insert(r.clone(), now);
        }
    }

    pub(crate) fn remember_image(&self, f: &Function, tag: &str, image: &str, reason: &'static str, message: &str) {
        let key = (f.uid().unwrap_or_default(), tag.to_string());
        self.known_images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (image.to_string(), reason, message.to_string()));
    }

    pub(crate) fn known_image(&self, f: &Function, tag: &str) -> Option<KnownImage> {
        let key = (f.uid().unwrap_or_default(), tag.to_string());
        self.known_images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    pub(crate) fn wrote(&self) {
        Metrics::inc(&self.metrics.api_writes);
    }

    /// Count a finished Job once.
    pub(crate) fn first_time(&self, job: &Job) -> bool {
        let uid = job.uid().unwrap_or_default();
        self.counted_jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(uid)
    }

    pub(crate) async fn event(&self, f: &Function, type_: EventType, reason: &str, note: String) {
        self.event_related(f, type_, reason, note, None).await
    }

    /// An event about the Function that also names another object (`related`).
    pub(crate) async fn event_related(
        &self,
        f: &Function,
        type_: EventType,
        reason: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
        let Some(rec) = &self.recorder else { return };
        let ev = Note {
            type_,
            reason,
            note: truncate(&note, 1000),
            regarding: f.object_ref(&()),
            related,
        };
        self.wrote();
        if let Err(e) = rec.publish(ev).await {
            tracing::warn!(function = %f.name_any(), error = %e, "cannot record an event");
        }
    }
}

/// One reconcile of one Function: what its steps read (the Function with defaults applied, the
/// shared context, the time of this reconcile) and the status they write.
pub(crate) struct Reconciling<'a> {
    pub f: &'a Function,
    pub ctx: &'a Context,
    /// The controller's settings, with the registry addresses of the Function's namespace.
    pub settings: &'a Settings,
    pub status: FunctionStatus,
    pub now: String,
    /// When this reconcile began.
    pub started: Instant,
    pub name: String,
    pub ns: String,
    /// A Function from git: the commit its reference names now (set by `configuration`).
    pub git: Option<desired::GitBuild>,
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
        if let Some(base) = &ctx.registry_base {
            let _ = base.wait_until_ready().await;
        }
    })
    .await;
    if f.metadata.deletion_timestamp.is_some() {
        let uid = f.uid().unwrap_or_default();
        ctx.git_checks.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        ctx.rechecks.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        ctx.git_install_step
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
        // Owner references let the garbage collector delete the rest.
        return Ok(Action::await_change());
    }
    let mut func = (*f).clone();
    apply_defaults(&mut func.spec);
    let old = f.status.clone().unwrap_or_default();
    let ns = f.namespace().unwrap_or_default();
    let settings = registry_config::settings_for(&ctx, &ns).await;
    let mut r = Reconciling {
        f: &func,
        ctx: &ctx,
        settings: &settings,
        status: old.clone(),
        now: now_rfc3339(),
        started: Instant::now(),
        name: f.name_any(),
        ns,
        git: None,
    };
    r.status.observed_generation = f.metadata.generation;

    let result = r.steps().await;
    if r.status != old {
        let api: Api<Function> = Api::namespaced(ctx.client.clone(), &r.ns);
        ctx.wrote();
        let patch = serde_json::json!({ "status": status_patch(&old, &r.status) });
        api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(function = %r.name, namespace = %r.ns, conditions = ?r.status.conditions.iter().map(|c| format!("{}={}/{}", c.type_, c.status, c.reason.as_deref().unwrap_or(""))).collect::<Vec<_>>(), "status");
    }
    result
}

impl Reconciling<'_> {
    /// Sets condition `type_` of the status, at this reconcile's time.
    fn set(&mut self, type_: &str, status: Status, reason: &str, message: impl Into<String>) {
        self.status.set_condition(type_, status, reason, message, &self.now);
    }

    /// Whether condition `type_` is True.
    fn is_true(&self, type_: &str) -> bool {
        self.status
            .condition(type_)
            .is_some_and(|c| c.status == Status::True.as_str())
    }

    /// An event about the Function.
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        self.ctx.event(self.f, type_, reason, note).await;
    }

    /// The steps in order: the spec, the source ConfigMap, the image, the workload.
    async fn steps(&mut self) -> Result<Action, Error> {
        // A Function from git is looked at again every poll interval, for a new commit (and
        // after a failed fetch, for the repository or Secret being fixed).
        let poll = self
            .f
            .spec
            .source
            .git_repository
            .is_some()
            .then(|| Duration::from_secs(self.settings.git_poll_seconds));
        if !self.configuration().await? {
            return Ok(poll.map_or_else(Action::await_change, Action::requeue));
        }
        let requeue = self.image().await?;
        if let Some(image) = self.status.function_image.clone() {
            self.run(&image).await?;
        }
        let next = [requeue, poll].into_iter().flatten().min().unwrap_or(RESYNC);
        Ok(Action::requeue(next.min(RESYNC)))
    }

    /// ConfigurationReady=False with `reason` and `msg`, and a Warning event when the message is
    /// new (a retry of the same failure writes no event).
    async fn configuration_failed(&mut self, reason: &str, msg: String) {
        let changed = self
            .status
            .condition(condition::CONFIGURATION_READY)
            .and_then(|c| c.message.as_deref())
            != Some(msg.as_str());
        self.set(condition::CONFIGURATION_READY, Status::False, reason, msg.clone());
        if changed {
            self.event(EventType::Warning, reason, msg).await;
        }
    }

    /// The spec (the same validation as the webhook's, for Functions that bypassed it) and the
    /// source ConfigMap: whether the Function can go on to its image.
    async fn configuration(&mut self) -> Result<bool, Error> {
        let f = self.f;
        let name = self.name.clone();
        if let Err(e) = validate(Some(&name), &f.spec) {
            self.configuration_failed(reason::INVALID_FUNCTION_SPEC, e.to_string())
                .await;
            return Ok(false);
        }
        if f.spec.source.inline.is_none() {
            if !self.git_source().await? {
                return Ok(false);
            }
        } else {
            // (A Function moved from git to inline keeps no commit of its old repository.)
            self.status.commit = None;
            self.status.base_dir = None;
            self.status.reference = None;
            self.status.git_repository = None;
            if !self.source_config_map().await? {
                return Ok(false);
            }
        }
        let s = self.settings;
        self.status.runtime = Some(f.spec.runtime.clone());
        self.status.runtime_image = Some(desired::base_image(f, s).0);
        self.status.function_resource_profile = desired::function_resources(f, s).1;
        self.status.build_resource_profile = desired::build_resources(f, s).1;
        self.status.pod_security_context = Some(super::security::function_pod(f));
        self.status.container_security_context = Some(super::security::function_container(f));
        self.status.function_annotations = f.spec.annotations.clone().filter(|a| !a.is_empty());
        Ok(true)
    }

    /// An inline source's ConfigMap; false when it cannot be written.
    async fn source_config_map(&mut self) -> Result<bool, Error> {
        let (f, ctx) = (self.f, self.ctx);
        let name = self.name.clone();
        let (outcome, _) = match objects::ensure(ctx, f, &ctx.stores.config_maps, &desired::config_map(f)).await {
            Ok(done) => done,
            Err(e) => {
                // Admission refuses what cannot fit; what the API server refuses besides (a quota,
                // a policy) goes into the status and an event too, not only the log.
                self.configuration_failed(reason::CONFIGMAP_ERROR, format!("ConfigMap {name}: {e}"))
                    .await;
                return Err(e);
            }
        };
        let mut holds = format!("ConfigMap {name} holds the source");
        if let Some(w) = runtime_deprecation(&f.spec.runtime) {
            holds.push_str(&format!(". Warning: {w}"));
        }
        match outcome {
            Outcome::Created | Outcome::Updated => {
                let r = if outcome == Outcome::Created {
                    reason::CONFIGMAP_CREATED
                } else {
                    reason::CONFIGMAP_UPDATED
                };
                self.set(condition::CONFIGURATION_READY, Status::True, r, holds.clone());
                self.event(EventType::Normal, r, holds).await;
            }
            // (Also what a reconcile working from a stale copy of the Function sees: the same as
            // the reconcile that created the ConfigMap wrote, so no flapping.)
            Outcome::Unchanged if !self.is_true(condition::CONFIGURATION_READY) => {
                self.set(
                    condition::CONFIGURATION_READY,
                    Status::True,
                    reason::CONFIGMAP_CREATED,
                    holds,
                );
            }
            Outcome::Unchanged => {}
        }
        Ok(true)
    }
}

/// The status as a merge patch: fields that went away are set to null (a merge patch leaves
/// out-of-patch fields as they were, which would make the next reconcile write again).
/// Maps are merged too, so a key gone from a map (functionAnnotations, a security context's
/// field) is set to null at its depth.
pub fn status_patch(old: &FunctionStatus, new: &FunctionStatus) -> serde_json::Value {
    fn clear_gone(patch: &mut serde_json::Value, old: &serde_json::Value) {
        if let (Some(p), Some(o)) = (patch.as_object_mut(), old.as_object()) {
            for (k, old_v) in o {
                match p.get_mut(k) {
                    Some(new_v) => clear_gone(new_v, old_v),
                    None => {
                        p.insert(k.clone(), serde_json::Value::Null);
                    }
                }
            }
        }
    }
    let mut patch = serde_json::to_value(new).unwrap_or_default();
    clear_gone(&mut patch, &serde_json::to_value(old).unwrap_or_default());
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
        // Within a map too: a merge patch would keep the old key.
        let map = |kv: &[(&str, &str)]| Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let old = FunctionStatus {
            function_annotations: map(&[("a", "1"), ("b", "2")]),
            ..Default::default()
        };
        let new = FunctionStatus {
            function_annotations: map(&[("b", "3")]),
            ..Default::default()
        };
        assert_eq!(
            status_patch(&old, &new),
            serde_json::json!({"functionAnnotations": {"a": null, "b": "3"}})
        );
    }
}
