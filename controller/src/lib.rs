//! The Function controller: the `Function` resource, its defaults and validation, the objects
//! it owns, the reconcile loop, the admission webhooks and the controller's metrics.
//!
//! `fnbuild-controller run` runs [`run`]; `fnbuild-controller manifests` prints [`manifests::render`].

pub mod build_job;
pub mod cache_key;
pub mod compare;
pub mod defaults;
pub mod desired;
pub mod events;
pub mod git_webhook;
pub mod http;
pub mod manifests;
pub mod metrics;
pub mod reconcile;
pub mod resources;
pub mod security;
pub mod settings;
pub mod types;
pub mod validation;
pub mod webhook;

pub use types::{Function, FunctionSpec, FunctionStatus};

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::{controller, reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client};
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Install ring as the process's rustls crypto provider (kube, reqwest and the webhook server
/// all use rustls; with one provider installed nothing has to guess). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How `fnbuild-controller run` runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub settings: settings::Settings,
    /// `/metrics` and `/healthz` (plain HTTP).
    pub metrics_addr: SocketAddr,
    /// The admission webhooks (HTTPS); off without a certificate.
    pub webhook_addr: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Push events from git hosts (plain HTTP); `None`: not served.
    pub git_webhook_addr: Option<SocketAddr>,
    /// Functions reconciled at once.
    pub concurrency: u16,
    /// Ask the push registry whether an image exists before building it.
    pub registry_check: bool,
}

/// Run the controller, the webhook server and the metrics server until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<()> {
    install_crypto_provider();
    let metrics = Arc::new(Metrics::default());

    let listener = http::bind(opts.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    let m = metrics.clone();
    tokio::spawn(http::serve(listener, None, move |req| {
        let m = m.clone();
        async move {
            match req.path.as_str() {
                "/metrics" => http::Resp {
                    status: hyper::StatusCode::OK,
                    content_type: "text/plain; version=0.0.4",
                    body: m.render().into_bytes(),
                },
                "/healthz" | "/readyz" => http::Resp::text(hyper::StatusCode::OK, "ok"),
                _ => http::Resp::text(hyper::StatusCode::NOT_FOUND, "not found"),
            }
        }
    }));

    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = http::tls_acceptor(cert, key).map_err(anyhow::Error::msg)?;
            let listener = http::bind(opts.webhook_addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "serving the admission webhooks over HTTPS");
            tokio::spawn(webhook::serve(listener, tls, metrics.clone()));
        }
        (None, None) => tracing::warn!("no --tls-cert/--tls-key: the admission webhooks are off"),
        _ => anyhow::bail!("give both --tls-cert and --tls-key, or neither"),
    }

    let stop = stop_signal();
    let client = Client::try_default()
        .await
        .context("cannot connect to the Kubernetes API (KUBECONFIG or the in-cluster service account)")?;
    let registry = if opts.registry_check {
        let s = &opts.settings;
        let ro = fnbuild::registry::RegistryOptions {
            insecure_registries: s.insecure_registries.clone(),
            retry: fnbuild::registry::RetryPolicy {
                max_attempts: 2,
                max_elapsed: Duration::from_secs(10),
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(1),
            },
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        Some(fnbuild::registry::Client::new(ro).context("cannot set up the registry client")?)
    } else {
        None
    };

    let owned = watcher::Config::default().labels(&format!("{}={}", desired::LABEL_MANAGED_BY, desired::MANAGED_BY));
    macro_rules! cache {
        ($k:ty) => {{
            let (reader, writer) = reflector::store::<$k>();
            let stream = watcher(Api::<$k>::all(client.clone()), owned.clone())
                .default_backoff()
                .reflect(writer)
                .touched_objects();
            (reader, stream)
        }};
    }
    let (config_maps, cm_stream) = cache!(ConfigMap);
    let (jobs, job_stream) = cache!(Job);
    let (deployments, dep_stream) = cache!(Deployment);
    let (services, svc_stream) = cache!(Service);
    let (hpas, hpa_stream) = cache!(HorizontalPodAutoscaler);
    let stores = reconcile::Stores {
        config_maps,
        jobs,
        deployments,
        services,
        hpas,
    };

    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let recorder = events::Recorder::new(client.clone(), manifests::NAME, instance);
    let mut ctx = reconcile::Context::new(
        client.clone(),
        opts.settings.clone(),
        registry,
        stores,
        Some(recorder),
        metrics.clone(),
    );
    // The registry Secret to copy: one watched object; a change reconciles every Function, so
    // the copies follow it.
    let base_ns = &opts.settings.registry_config_namespace;
    let base_stream = (!base_ns.is_empty()).then(|| {
        let (reader, writer) = reflector::store::<Secret>();
        ctx.registry_base = Some(reader);
        let only = watcher::Config::default().fields(&format!("metadata.name={}", opts.settings.registry_secret));
        watcher(Api::<Secret>::namespaced(client.clone(), base_ns), only)
            .default_backoff()
            .reflect(writer)
            .touched_objects()
            .filter_map(|r| async move { r.ok().map(|_| ()) })
    });
    let ctx = Arc::new(ctx);
    tracing::info!(
        builder = %opts.settings.builder_image,
        push = %opts.settings.registry_push_address,
        pull = %opts.settings.registry_pull_address,
        max_builds = opts.settings.max_concurrent_builds,
        "Function controller starting"
    );
    let functions = Controller::new(Api::<Function>::all(client), watcher::Config::default());
    // A signed push event re-checks the Functions on its repository now.
    let (recheck, rechecks) = tokio::sync::mpsc::unbounded_channel();
    if let Some(addr) = opts.git_webhook_addr {
        let listener = http::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, path = %format!("{}NAMESPACE", git_webhook::PATH_PREFIX), "serving the git webhook (push events)");
        let (secrets, writer) = reflector::store::<Secret>();
        let only = watcher::Config::default().fields(&format!("metadata.name={}", git_webhook::SECRET_NAME));
        let watch = watcher(Api::<Secret>::all(ctx.client.clone()), only)
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {});
        tokio::spawn(watch);
        let receiver = git_webhook::Receiver {
            ctx: ctx.clone(),
            functions: functions.store(),
            secrets,
            recheck,
        };
        tokio::spawn(git_webhook::serve(listener, receiver));
    }
    let rechecks = futures_util::stream::unfold(rechecks, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let run = functions
        .owns_stream(cm_stream)
        .owns_stream(job_stream)
        .owns_stream(dep_stream)
        .owns_stream(svc_stream)
        .owns_stream(hpa_stream)
        .reconcile_all_on(futures_util::stream::iter(base_stream).flatten())
        .reconcile_on(rechecks)
        .with_config(controller::Config::default().concurrency(opts.concurrency))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(function = %obj.name, namespace = ?obj.namespace, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(e @ controller::Error::ObjectNotFound(..)) => tracing::debug!(error = %e, "controller"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        });
    // The first SIGTERM or SIGINT stops the controller gracefully (reconciles in flight end);
    // when that cannot finish (an API server that does not answer), it stops anyway.
    tokio::select! {
        () = run => tracing::info!("Function controller stopped"),
        () = async {
            stop.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "Function controller stopped without finishing (the API server does not answer?)"),
    }
    Ok(())
}

/// How long a graceful stop may take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// SIGTERM (what Kubernetes sends) or SIGINT; the handlers are in place when this returns,
/// so a signal that comes before the future is awaited is not lost.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}
