//! The `fnbuild-controller` command line: `run` (the controller) and `manifests`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fnbuild::cli::{LogArgs, LogFormat};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fnbuild-controller",
    version,
    about = "The Function controller: Kyma-compatible Functions (serverless.kyma-project.io/v1alpha2) \
             become build Jobs running fnbuild, then Deployments, Services and HorizontalPodAutoscalers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the Function controller: Functions become build Jobs, Deployments, Services and
    /// HorizontalPodAutoscalers; also serves the admission webhooks (HTTPS), /metrics and /healthz.
    #[command(after_help = "Example (outside a cluster, webhooks on 127.0.0.1:9443):\n  \
        KUBECONFIG=~/.kube/config fnbuild-controller run --builder-image registry:5000/fnbuild:1 \\\n    \
        --registry-push-address registry:5000 --registry-pull-address localhost:5000 \\\n    \
        --tls-cert tls.crt --tls-key tls.key --webhook-addr 127.0.0.1:9443")]
    Run(ControllerArgs),
    /// Print the controller's manifests (Function CRD, RBAC, Deployment, webhook configurations)
    /// as YAML for `kubectl apply -f -`.
    #[command(
        after_help = "Example:\n  fnbuild-controller manifests --image registry:5000/fnbuild:1 --builder-image registry:5000/fnbuild:1 \\\n    \
        --tls-cert tls.crt --tls-key tls.key | kubectl apply -f -"
    )]
    Manifests(ManifestsArgs),
}

fn main() {
    // git or ssh asking for a credential of the controller's `git ls-remote` (this binary is
    // their askpass program).
    if let Some(code) = fnbuild::git::askpass::answer_if_asked() {
        std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
    }
    let cli = Cli::parse();
    let in_pod = matches!(cli.command, Command::Run(_)) && !std::io::stderr().is_terminal();
    cli.log.init(in_pod.then_some(LogFormat::Json));
    let result = match cli.command {
        // Many reconciles and requests at once.
        Command::Run(args) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run_controller(args)),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start")),
        },
        Command::Manifests(args) => run_manifests(args),
    };
    fnbuild::cli::exit(fnbuild::cli::report(result))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}': write KEY=VALUE")),
    }
}

/// The controller's settings, shared by `run` and `manifests`.
#[derive(Args)]
struct ControllerSettingsArgs {
    /// The image with fnbuild that build Jobs run.
    #[arg(long, env = "FNBUILD_BUILDER_IMAGE", default_value = "fnbuild:latest")]
    builder_image: String,
    /// The fnbuild executable in the builder image.
    #[arg(long, default_value = "fnbuild")]
    builder_command: String,
    /// The registry build Jobs push to: HOST[:PORT][/PATH].
    #[arg(long, env = "FNBUILD_REGISTRY_PUSH_ADDRESS", default_value = "127.0.0.1:5000")]
    registry_push_address: String,
    /// The same registry as the nodes pull from it: HOST[:PORT][/PATH].
    #[arg(long, env = "FNBUILD_REGISTRY_PULL_ADDRESS", default_value = "127.0.0.1:5000")]
    registry_pull_address: String,
    /// Allow plain HTTP (and unverified TLS) for this registry (HOST[:PORT]), as the builder's
    /// flag: every build Job gets it, and the controller's registry checks use it; loopback
    /// registries need no flag. Repeatable, or HOST,HOST. Without HOST (the old spelling): the
    /// push registry.
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        value_delimiter = ',',
        num_args = 0..=1,
        default_missing_value = ""
    )]
    insecure_registry: Vec<String>,
    /// The kubernetes.io/dockerconfigjson Secret in each Function's namespace: the build's
    /// registry credentials and the function's image pull Secret.
    #[arg(long, default_value = fnbuild_controller::settings::DEFAULT_REGISTRY_SECRET)]
    registry_secret: String,
    /// The namespace whose registry Secret (--registry-secret) is copied into each namespace
    /// that has Functions, as Kyma's controller copies its own; the keys of a namespace's copy
    /// (isInternal, pushRegAddr, pullRegAddr, registryAddress) decide where its builds push and
    /// its Pods pull, over --registry-push-address / --registry-pull-address. A namespace's own
    /// Secret of that name is left alone, and used. Empty: no copying. [default: serverless-system;
    /// for `manifests`, its --namespace]
    #[arg(long, value_name = "NAMESPACE")]
    registry_config_namespace: Option<String>,
    /// The Secret in a Function's namespace with .npmrc / pip.conf for the build (used when present).
    #[arg(long, default_value = fnbuild_controller::settings::DEFAULT_PACKAGE_REGISTRY_SECRET)]
    package_registry_secret: String,
    /// The Secret in a Function's namespace whose `key` (16 bytes or more) signs the namespace's
    /// dependency cache entries in the registry. Only the build steps that push mount it, never
    /// the install step; in a namespace without it, builds use no registry cache.
    #[arg(long, default_value = fnbuild_controller::settings::DEFAULT_CACHE_KEY_SECRET)]
    cache_key_secret: String,
    /// A base image for a runtime instead of its default (the builder's --base). Repeatable.
    #[arg(long, value_name = "RUNTIME=IMAGE", value_parser = parse_key_value)]
    base_image: Vec<(String, String)>,
    /// A build Job's time limit, in seconds (activeDeadlineSeconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    build_deadline: i64,
    /// How often, in seconds, a Function from git has its reference resolved again (git
    /// ls-remote, no clone); a new commit is built.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    git_poll_interval: u64,
    /// Build Jobs running at once, over all namespaces.
    #[arg(long, default_value_t = 3)]
    max_concurrent_builds: usize,
    /// Seconds before retrying a failed build; doubles with each failure, at most 300.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    build_retry_delay: u64,
    /// The HorizontalPodAutoscaler's target CPU use, in percent of the request.
    #[arg(long, default_value_t = 50)]
    target_cpu_utilization: i32,
    /// Build Pods use the node's network (hostNetwork): for a single-node test cluster whose
    /// registry listens on the node's loopback address (as tests/cluster/up's does), and only
    /// there. It also puts the install step's scripts (the Function author's npm/pip install
    /// scripts) on the node's network, where they reach everything that listens on the node.
    /// Off by default: build Pods run in the Pod network.
    #[arg(long)]
    build_host_network: bool,
    /// Build Jobs do not keep dependency layers in the push registry (by default they do, in
    /// PUSH/fnbuild-cache/NAMESPACE, so that a source edit installs no dependencies again).
    #[arg(long)]
    no_dependency_cache: bool,
    /// Every Function's PUBLISHER_PROXY_ADDRESS, where `event.emitCloudEvent` posts (Kyma's
    /// default; a Function's own spec.env wins; empty: not set).
    #[arg(long, value_name = "URL", default_value = fnbuild_controller::settings::DEFAULT_PUBLISHER_PROXY_ADDRESS)]
    publisher_proxy_address: String,
    /// Every Function's TRACE_COLLECTOR_ENDPOINT, where the runtimes export traces over OTLP/HTTP
    /// (Kyma's default; a Function's own spec.env wins; empty: not set).
    #[arg(long, value_name = "URL", default_value = fnbuild_controller::settings::DEFAULT_TRACE_COLLECTOR_ENDPOINT)]
    trace_collector_endpoint: String,
    /// The function profile when a Function names none: XS, S, M, L or XL.
    #[arg(long, default_value = "L")]
    default_function_profile: String,
    /// The build profile when a Function names none: local-dev, slow, normal or fast.
    #[arg(long, default_value = "normal")]
    default_build_profile: String,
    /// The platforms build Jobs build for (OS/ARCH[,OS/ARCH]: two or more make an image index,
    /// whose base must be multi-platform). [default: those of the cluster's Linux nodes, asked
    /// once a minute]
    #[arg(long, value_name = "OS/ARCH", value_delimiter = ',')]
    build_platforms: Vec<String>,
}

impl ControllerSettingsArgs {
    fn settings(self) -> Result<fnbuild_controller::settings::Settings> {
        use fnbuild_controller::resources::{build_profile, function_profile};
        if function_profile(&self.default_function_profile).is_none() {
            anyhow::bail!(
                "--default-function-profile {}: use XS, S, M, L or XL",
                self.default_function_profile
            );
        }
        if build_profile(&self.default_build_profile).is_none() {
            anyhow::bail!(
                "--default-build-profile {}: use local-dev, slow, normal or fast",
                self.default_build_profile
            );
        }
        if self.max_concurrent_builds == 0 {
            anyhow::bail!("--max-concurrent-builds must be at least 1");
        }
        let mut build_platforms: Vec<String> = Vec::new();
        for p in &self.build_platforms {
            let platform: fnbuild::oci::platform::Platform =
                p.parse().map_err(|e| anyhow::anyhow!("--build-platforms {p}: {e}"))?;
            if !build_platforms.contains(&platform.to_string()) {
                build_platforms.push(platform.to_string());
            }
        }
        build_platforms.sort();
        let mut settings = fnbuild_controller::settings::Settings {
            builder_image: self.builder_image,
            builder_command: self.builder_command,
            registry_push_address: self.registry_push_address,
            registry_pull_address: self.registry_pull_address,
            insecure_registries: Vec::new(),
            registry_secret: self.registry_secret,
            registry_config_namespace: self
                .registry_config_namespace
                .unwrap_or_else(|| fnbuild_controller::settings::DEFAULT_NAMESPACE.into()),
            package_registry_secret: self.package_registry_secret,
            cache_key_secret: self.cache_key_secret,
            base_images: self.base_image.into_iter().collect(),
            build_deadline_seconds: self.build_deadline,
            git_poll_seconds: self.git_poll_interval,
            max_concurrent_builds: self.max_concurrent_builds,
            build_retry_seconds: self.build_retry_delay,
            target_cpu_utilization: self.target_cpu_utilization,
            build_host_network: self.build_host_network,
            dependency_cache: !self.no_dependency_cache,
            publisher_proxy_address: self.publisher_proxy_address,
            trace_collector_endpoint: self.trace_collector_endpoint,
            defaults: fnbuild_controller::defaults::Defaults {
                function_profile: self.default_function_profile,
                build_profile: self.default_build_profile,
            },
            build_platforms,
        };
        for host in &self.insecure_registry {
            // A bare flag: the push registry.
            let host = match host.trim() {
                "" => settings.push_registry_host(),
                h => h,
            }
            .to_string();
            if !settings.insecure_registries.contains(&host) {
                settings.insecure_registries.push(host);
            }
        }
        Ok(settings)
    }
}

#[derive(Args)]
struct ControllerArgs {
    #[command(flatten)]
    settings: ControllerSettingsArgs,
    /// Where /metrics and /healthz are served (plain HTTP).
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Where the admission webhooks are served (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    webhook_addr: std::net::SocketAddr,
    /// The webhook server's certificate chain (PEM); without it the webhooks are off.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The webhook server's private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Where push events from GitHub, GitLab, Gitea and Forgejo are taken (plain HTTP, at
    /// /git-webhook/NAMESPACE, signed with the `token` of the Secret fnbuild-git-webhook in that
    /// namespace): a push re-checks that namespace's Functions on the repository at once.
    /// Without it, Functions from git see new commits by polling alone.
    #[arg(long, value_name = "ADDR")]
    git_webhook_addr: Option<std::net::SocketAddr>,
    /// Functions reconciled at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Do not ask the push registry whether an image exists before building it, nor whether a
    /// running build has pushed it yet (then only the Job reports it).
    #[arg(long)]
    no_registry_check: bool,
}

async fn run_controller(args: ControllerArgs) -> Result<()> {
    fnbuild_controller::run(fnbuild_controller::RunOptions {
        settings: args.settings.settings()?,
        metrics_addr: args.metrics_addr,
        webhook_addr: args.webhook_addr,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        git_webhook_addr: args.git_webhook_addr,
        concurrency: args.concurrency,
        registry_check: !args.no_registry_check,
    })
    .await
}

#[derive(Args)]
struct ManifestsArgs {
    #[command(flatten)]
    settings: ControllerSettingsArgs,
    /// The controller's namespace.
    #[arg(long, default_value = "serverless-system")]
    namespace: String,
    /// The controller's image (with the fnbuild-controller binary; the builder image has it).
    #[arg(long, default_value = "fnbuild:latest")]
    image: String,
    /// The webhook server's certificate (PEM): put into the webhook Secret, and trusted by the
    /// API server unless --ca-bundle is given.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The webhook server's private key (PEM), put into the webhook Secret.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) the API server verifies the webhook server with.
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Call the webhooks at this base URL (https://HOST:PORT) instead of the controller's
    /// Service: for a controller running outside the cluster.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// The cluster's Kubernetes version (1.MINOR). From 1.25 the CRD carries Kyma's validation
    /// rules in CEL, so the API server enforces them even while the webhook is down; give the
    /// version of an older cluster, whose API server would refuse the CRD with them.
    #[arg(long, value_name = "1.MINOR", default_value = "1.25", value_parser = kubernetes_minor)]
    kubernetes_version: u32,
}

/// `1.MINOR` → MINOR.
fn kubernetes_minor(v: &str) -> Result<u32, String> {
    v.strip_prefix("1.")
        .and_then(|m| m.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("'{v}' is not a Kubernetes version such as 1.30"))
}

fn run_manifests(mut args: ManifestsArgs) -> Result<()> {
    // The controller's own namespace holds the registry Secret it copies, unless told otherwise.
    args.settings
        .registry_config_namespace
        .get_or_insert_with(|| args.namespace.clone());
    let settings = args.settings.settings()?;
    let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>> {
        p.as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .transpose()
    };
    let opts = fnbuild_controller::manifests::ManifestOptions {
        namespace: args.namespace,
        image: args.image,
        tls_cert: read(&args.tls_cert)?,
        tls_key: read(&args.tls_key)?,
        ca_bundle: read(&args.ca_bundle)?,
        webhook_url: args.webhook_url,
        kubernetes_minor: args.kubernetes_version,
        settings,
    };
    print!(
        "{}",
        fnbuild_controller::manifests::render(&opts).map_err(anyhow::Error::msg)?
    );
    Ok(())
}
