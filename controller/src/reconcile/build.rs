//! The image step: an image already known for the Function's inputs (its tag), one the push
//! registry already has, or a build Job: started when a build slot is free, tracked until the
//! registry or the Job says it is done, retried with a growing delay when it fails.

use super::super::cache_key;
use super::super::desired::{self, BuildInputs, LABEL_IMAGE_TAG, LABEL_UUID};
use super::super::metrics::Metrics;
use super::super::settings::CACHE_KEY_SECRET_KEY;
use super::super::types::{condition, reason, Status};
use super::job::{
    build_seconds, failure_detail, job_attempt, job_messages, job_outcome, parse_digest, retry_delay,
    seconds_since_failure, truncate,
};
use super::objects::delete;
use super::{Context, Error, Reconciling, FIELD_MANAGER, RECENT_BUILD_WINDOW};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The image a reconcile wants: its tag (from the Function's build inputs) and the base image
/// the build is told to use (`None`: the runtime's default).
struct Target {
    tag: String,
    base: Option<desired::BaseArg>,
    platforms: Vec<String>,
}

/// A step that wants the Function reconciled again after this long; `None`: only on a change
/// (or at the resync).
type Requeue = Option<Duration>;

impl Reconciling<'_> {
    /// The image for the Function's current inputs: into the status once known.
    pub(super) async fn image(&mut self) -> Result<Requeue, Error> {
        let (f, ctx) = (self.f, self.ctx);
        let s = self.settings;
        let (base_for_tag, base) = desired::base_image(f, s);
        let platforms = ctx.build_platforms().await;
        let target = Target {
            tag: desired::image_tag(f, &base_for_tag, self.git.as_ref(), &platforms),
            base,
            platforms,
        };
        let tag = target.tag.as_str();
        // Where the build pushes (and the registry is asked for) the image of this tag.
        let push = desired::push_reference(f, s, tag);
        let uid = f.uid().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = ctx
            .stores
            .jobs
            .state()
            .into_iter()
            .filter(|j| j.namespace().as_deref() == Some(self.ns.as_str()) && j.labels().get(LABEL_UUID) == Some(&uid))
            .collect();
        // Jobs for other tags are old: the inputs changed since.
        for old in jobs
            .iter()
            .filter(|j| j.labels().get(LABEL_IMAGE_TAG).map(String::as_str) != Some(tag))
        {
            tracing::info!(function = %self.name, job = %old.name_any(), "deleting an old build Job");
            delete::<Job>(ctx, &self.ns, &old.name_any()).await?;
        }
        if self.status.image_tag.as_deref() != Some(tag) {
            if let Some((image, r, msg)) = ctx.known_image(f, tag) {
                self.status.function_image = Some(image);
                self.status.image_tag = Some(tag.to_string());
                self.set(condition::BUILD_READY, Status::True, r, msg);
            }
        }
        if self.status.image_tag.as_deref() == Some(tag) && self.status.function_image.is_some() {
            if !self.is_true(condition::BUILD_READY) {
                self.set(
                    condition::BUILD_READY,
                    Status::True,
                    reason::JOB_FINISHED,
                    format!("image {tag} is built"),
                );
            }
            return Ok(None);
        }
        let latest = jobs
            .iter()
            .filter(|j| j.labels().get(LABEL_IMAGE_TAG).map(String::as_str) == Some(tag))
            .max_by_key(|j| job_attempt(j))
            .cloned();
        let Some(job) = latest else {
            // No Job yet: the registry may have the image already (same inputs, built before).
            let existing = registry_digest(ctx, &push).await.unwrap_or_else(|e| {
                tracing::warn!(image = %push, error = %e, "cannot ask the registry for the image; building it");
                None
            });
            if let Some(digest) = existing {
                let image = desired::pull_image(f, s, &digest);
                Metrics::inc(&ctx.metrics.builds_skipped);
                let msg = format!("the registry already has {push}; running {image}");
                return Ok(self.image_ready(tag, image, reason::IMAGE_EXISTS, msg).await);
            }
            return self.start_build(&target, 1).await;
        };
        let job_name = job.name_any();
        match job_outcome(&job) {
            None => {
                // The builder puts the manifest last, under this tag: once the registry has the
                // tag, the image is complete. That shows a second or so before the Job does (the
                // kubelet notices a container's exit at its next look, up to a second later, and
                // the Job controller follows), so the registry is asked while the Job runs.
                // Quietly: the Job's own outcome settles the build when the registry cannot be
                // asked.
                let pushed = registry_digest(ctx, &push).await.unwrap_or_else(|e| {
                    tracing::debug!(image = %push, error = %e, "cannot ask the registry for the build's image");
                    None
                });
                if let Some(digest) = pushed {
                    let image = desired::pull_image(f, s, &digest);
                    Metrics::inc(&ctx.metrics.builds_succeeded);
                    ctx.pushed_jobs
                        .lock()
                        .unwrap()
                        .insert(format!("{}/{job_name}", self.ns));
                    let msg = format!("Job {job_name} pushed {image}");
                    return Ok(self.image_ready(tag, image, reason::JOB_FINISHED, msg).await);
                }
                self.set(
                    condition::BUILD_READY,
                    Status::Unknown,
                    reason::JOB_RUNNING,
                    format!("Job {job_name} is building image {tag}"),
                );
                Ok(ctx.registry.as_ref().map(|_| push_poll_interval(&job)))
            }
            Some(true) => {
                let messages = job_messages(ctx, &self.ns, &job_name).await;
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
                        Ok(self.image_ready(tag, image, reason::JOB_FINISHED, msg).await)
                    }
                    None => {
                        let detail = "it succeeded but its Pod's termination message holds no image digest";
                        self.failed(&job, &target, detail.to_string()).await
                    }
                }
            }
            Some(false) => {
                let messages = job_messages(ctx, &self.ns, &job_name).await;
                if self.git.is_some() && !has_install_step(&job) && install_needed(&messages) {
                    return self.rebuild_with_install_step(&job, &target).await;
                }
                let detail = failure_detail(&messages).unwrap_or_else(|| {
                    job.status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .find(|c| c.type_ == "Failed")
                        .and_then(|c| c.message.clone().or(c.reason.clone()))
                        .unwrap_or_else(|| "no log available".into())
                });
                self.failed(&job, &target, detail).await
            }
        }
    }

    /// A build Job failed (`detail` says why): BuildReady=False, an event the first time, and
    /// once the retry delay has passed, the next attempt in a new Job.
    async fn failed(&mut self, job: &Job, target: &Target, detail: String) -> Result<Requeue, Error> {
        let ctx = self.ctx;
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
            self.event(EventType::Warning, reason::JOB_FAILED, msg.clone()).await;
        }
        self.set(
            condition::BUILD_READY,
            Status::False,
            reason::JOB_FAILED,
            truncate(&msg, 2000),
        );
        let wait = delay.as_secs() as i64 - since;
        if wait > 0 {
            return Ok(Some(Duration::from_secs(wait as u64)));
        }
        // Retry: a new Job, the failed one removed.
        let requeue = self.start_build(target, attempt + 1).await?;
        if self
            .status
            .condition(condition::BUILD_READY)
            .is_some_and(|c| c.reason.as_deref() == Some(reason::JOB_CREATED))
        {
            delete::<Job>(ctx, &self.ns, &job_name).await?;
            // Keep the failure visible next to the retry.
            let c = self
                .status
                .conditions
                .iter_mut()
                .find(|c| c.type_ == condition::BUILD_READY)
                .expect("just set");
            c.message = Some(truncate(&format!("retry {} after: {msg}", attempt + 1), 2000));
        }
        Ok(requeue)
    }

    /// A git source's build without an install step found that the dependencies need one (no
    /// cache has them): not a failure. The Function's builds get the install step from now on,
    /// and this one is started again at once with it.
    async fn rebuild_with_install_step(&mut self, job: &Job, target: &Target) -> Result<Requeue, Error> {
        let job_name = job.name_any();
        let uid = self.f.uid().unwrap_or_default();
        self.ctx
            .git_install_step
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid);
        tracing::info!(function = %self.name, namespace = %self.ns, job = %job_name, "the dependencies need an install step: building again with one");
        let requeue = self.start_build(target, job_attempt(job) + 1).await?;
        if self
            .status
            .condition(condition::BUILD_READY)
            .is_some_and(|c| c.reason.as_deref() == Some(reason::JOB_CREATED))
        {
            delete::<Job>(self.ctx, &self.ns, &job_name).await?;
        }
        Ok(requeue)
    }

    /// The build's image is known: into the status (BuildReady=True, by `reason`), the memory of
    /// recent images and an event.
    async fn image_ready(&mut self, tag: &str, image: String, reason: &'static str, msg: String) -> Requeue {
        self.status.function_image = Some(image.clone());
        self.status.image_tag = Some(tag.to_string());
        self.ctx.remember_image(self.f, tag, &image, reason, &msg);
        self.set(condition::BUILD_READY, Status::True, reason, msg.clone());
        self.event(EventType::Normal, reason, msg).await;
        None
    }

    /// A build Job for `target` (its `attempt`), once a build slot is free; BuildReady=Unknown
    /// either way (queued, or the Job created).
    async fn start_build(&mut self, target: &Target, attempt: u32) -> Result<Requeue, Error> {
        let (f, ctx) = (self.f, self.ctx);
        let ns = self.ns.clone();
        let tag = target.tag.as_str();
        let s = self.settings;
        let mut recent = ctx.recent_builds.lock().await;
        let uid = f.uid().unwrap_or_default();
        let busy = busy_builds(ctx, &uid, &mut recent);
        if busy >= s.max_concurrent_builds {
            self.set(
                condition::BUILD_READY,
                Status::Unknown,
                reason::JOB_QUEUED,
                format!(
                    "waiting for a build slot ({busy} of {} builds running)",
                    s.max_concurrent_builds
                ),
            );
            return Ok(Some(Duration::from_secs(5)));
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let (npmrc, pip_conf) = package_registry_files(ctx, &secrets, &ns, f.spec.runtime.starts_with("nodejs")).await;
        let cache_key = s.dependency_cache && cache_key_secret(ctx, &secrets, &ns).await;
        let install_step = match &self.git {
            None => desired::names_packages(f),
            Some(_) => ctx
                .git_install_step
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&uid),
        };
        let inputs = BuildInputs {
            tag: tag.to_string(),
            attempt,
            base: target.base.clone(),
            npmrc,
            pip_conf,
            cache_key,
            git: self.git.clone(),
            install_step,
            platforms: target.platforms.clone(),
        };
        let job = desired::build_job(f, s, &inputs);
        let job_name = job.name_any();
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        ctx.wrote();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        recent.insert(format!("{ns}/{job_name}"), (Instant::now(), uid));
        drop(recent);
        Metrics::inc(&ctx.metrics.builds_started);
        let msg = format!("Job {job_name} builds image {tag} (attempt {attempt})");
        self.set(
            condition::BUILD_READY,
            Status::Unknown,
            reason::JOB_CREATED,
            msg.clone(),
        );
        self.event(EventType::Normal, reason::JOB_CREATED, msg).await;
        tracing::info!(function = %self.name, namespace = %ns, job = %job_name, %tag, attempt, "build Job created");
        Ok(None)
    }
}

/// Build slots taken by other Functions: their running build Jobs (less those whose image the
/// registry already showed) and the Jobs this process created that the cache does not show yet.
fn busy_builds(ctx: &Context, uid: &str, recent: &mut std::collections::HashMap<String, (Instant, String)>) -> usize {
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
        .filter(|j| j.labels().get(LABEL_UUID).map(String::as_str) != Some(uid))
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
    running.len() + recent.values().filter(|(_, owner)| owner != uid).count()
}

/// Whether the namespace's package registry Secret has `.npmrc` (Node runtimes) or `pip.conf`
/// (Python runtimes) for the build; neither when it is missing or cannot be read.
async fn package_registry_files(ctx: &Context, secrets: &Api<Secret>, ns: &str, node: bool) -> (bool, bool) {
    match secrets.get_opt(&ctx.settings.package_registry_secret).await {
        Ok(Some(secret)) => (
            node && has_key(&secret, ".npmrc"),
            !node && has_key(&secret, "pip.conf"),
        ),
        Ok(None) => (false, false),
        Err(e) => {
            tracing::warn!(namespace = %ns, error = %e, "cannot read the package registry Secret; building without it");
            (false, false)
        }
    }
}

/// Whether the namespace has the dependency cache's signing key: its Secret, made now if it has
/// none.
async fn cache_key_secret(ctx: &Context, secrets: &Api<Secret>, ns: &str) -> bool {
    let name = &ctx.settings.cache_key_secret;
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => has_key(&secret, CACHE_KEY_SECRET_KEY),
        Ok(None) => match cache_key::create(&ctx.client, ns, name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "cannot create the cache key Secret; building without the registry cache");
                false
            }
        },
        Err(e) => {
            tracing::warn!(namespace = %ns, error = %e, "cannot read the cache key Secret; building without the registry cache");
            false
        }
    }
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// The digest the push registry has for `reference`: `Ok(None)` when it has none (or no
/// registry is asked), `Err` when it cannot be asked.
async fn registry_digest(ctx: &Context, reference: &str) -> Result<Option<String>, fnbuild::registry::RegistryError> {
    let (Some(client), Ok(r)) = (
        ctx.registry.as_ref(),
        reference.parse::<fnbuild::oci::reference::Reference>(),
    ) else {
        return Ok(None);
    };
    match client.pull_manifest(&r).await {
        Ok(m) => Ok(Some(m.index_digest.unwrap_or(m.digest))),
        Err(fnbuild::registry::RegistryError::ManifestUnknown { .. }) => Ok(None),
        Err(e) => Err(e),
    }
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

/// Whether the Job's Pod has the install step.
fn has_install_step(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == desired::INSTALL_CONTAINER))
}

/// Whether the build container said the dependencies need an install step.
fn install_needed(messages: &[super::job::StepMessage]) -> bool {
    messages
        .iter()
        .any(|m| !m.init && m.container == desired::BUILD_CONTAINER && m.exit_code == fnbuild::cli::EXIT_INSTALL_NEEDED)
}

/// Whether a Job is still running (one being deleted no longer counts).
fn active(job: &Job) -> bool {
    job_outcome(job).is_none() && job.metadata.deletion_timestamp.is_none()
}
