//! The controller's configuration (its command-line flags), shared by the desired-object
//! builders, the reconciler and the manifests.

use super::defaults::Defaults;
use std::collections::BTreeMap;

/// Kyma's name for the registry Secret (type `kubernetes.io/dockerconfigjson`) in each
/// Function's namespace.
pub const DEFAULT_REGISTRY_SECRET: &str = "serverless-registry-config-default";
/// The controller's namespace, unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "serverless-system";
/// Kyma's name for the package-registry Secret (`.npmrc`, `pip.conf`) in a Function's namespace.
pub const DEFAULT_PACKAGE_REGISTRY_SECRET: &str = "serverless-package-registry-config";
/// The Secret in a Function's namespace whose `key` signs the namespace's dependency cache
/// entries in the registry (the builder's `--cache-key-file`); without it, no registry cache.
pub const DEFAULT_CACHE_KEY_SECRET: &str = "fnbuild-dependency-cache-key";
/// The key of that Secret that holds the signing key (16 bytes or more).
pub const CACHE_KEY_SECRET_KEY: &str = "key";
/// Kyma's default for `PUBLISHER_PROXY_ADDRESS` (its Serverless CR's `spec.eventing.endpoint`):
/// where `event.emitCloudEvent` posts.
pub const DEFAULT_PUBLISHER_PROXY_ADDRESS: &str =
    "http://eventing-publisher-proxy.kyma-system.svc.cluster.local/publish";
/// Kyma's default for `TRACE_COLLECTOR_ENDPOINT` (its Serverless CR's `spec.tracing.endpoint`):
/// where the runtimes export spans (OTLP over HTTP).
pub const DEFAULT_TRACE_COLLECTOR_ENDPOINT: &str =
    "http://telemetry-otlp-traces.kyma-system.svc.cluster.local:4318/v1/traces";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image with the fnbuild binary that build Jobs run.
    pub builder_image: String,
    /// The builder's executable in that image.
    pub builder_command: String,
    /// Where build Jobs push: `HOST[:PORT][/PATH]`.
    pub registry_push_address: String,
    /// Where the kubelet pulls from: `HOST[:PORT][/PATH]` (the same registry, as the nodes reach it).
    pub registry_pull_address: String,
    /// Registries (`HOST[:PORT]`) reached over plain HTTP or with unverified TLS, as the
    /// builder's `--insecure-registry`: every build Job gets each of them, and the controller's
    /// own registry checks use them.
    pub insecure_registries: Vec<String>,
    /// The dockerconfigjson Secret in the Function's namespace: DOCKER_CONFIG of the build
    /// Job (optional volume) and the Deployment's image pull Secret.
    pub registry_secret: String,
    /// The namespace whose `registry_secret` is copied into each namespace with Functions
    /// (Kyma's `serverless-registry-config-default` in its own namespace); empty: none is.
    pub registry_config_namespace: String,
    /// The Secret with `.npmrc` / `pip.conf` for the build, used when present.
    pub package_registry_secret: String,
    /// The Secret with the dependency cache's signing key (`key`), used when present: only
    /// the steps that push (never the install step) mount it.
    pub cache_key_secret: String,
    /// Base image per runtime, instead of the runtime's built-in default (passed as `--base`).
    pub base_images: BTreeMap<String, String>,
    /// A build Job's `activeDeadlineSeconds`.
    pub build_deadline_seconds: i64,
    /// How often a Function from git has its reference resolved again (a new commit: a build).
    pub git_poll_seconds: u64,
    /// Build Jobs running at once, over all namespaces.
    pub max_concurrent_builds: usize,
    /// Seconds before the first retry of a failed build; doubles with each failure (at most 300).
    pub build_retry_seconds: u64,
    /// Target CPU use of the HorizontalPodAutoscaler, in percent of the request.
    pub target_cpu_utilization: i32,
    /// Build Pods use the node's network namespace (`hostNetwork`): for single-node clusters
    /// whose registry listens on the node's loopback address, as the test cluster's does.
    pub build_host_network: bool,
    /// Build Jobs keep dependency layers in the push registry (`--cache-repo
    /// PUSH/fnbuild-cache/NAMESPACE`), so a source edit runs no npm / pip install again.
    pub dependency_cache: bool,
    /// `PUBLISHER_PROXY_ADDRESS` of every Function (its own `spec.env` wins).
    pub publisher_proxy_address: String,
    /// `TRACE_COLLECTOR_ENDPOINT` of every Function (its own `spec.env` wins).
    pub trace_collector_endpoint: String,
    pub defaults: Defaults,
    /// The platforms (`os/arch`) build Jobs build for; empty: those of the cluster's nodes.
    pub build_platforms: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            builder_image: "fnbuild:latest".into(),
            builder_command: "fnbuild".into(),
            registry_push_address: "127.0.0.1:5000".into(),
            registry_pull_address: "127.0.0.1:5000".into(),
            insecure_registries: Vec::new(),
            registry_secret: DEFAULT_REGISTRY_SECRET.into(),
            registry_config_namespace: DEFAULT_NAMESPACE.into(),
            package_registry_secret: DEFAULT_PACKAGE_REGISTRY_SECRET.into(),
            cache_key_secret: DEFAULT_CACHE_KEY_SECRET.into(),
            base_images: BTreeMap::new(),
            build_deadline_seconds: 1800,
            git_poll_seconds: 60,
            max_concurrent_builds: 3,
            build_retry_seconds: 10,
            target_cpu_utilization: 50,
            build_host_network: false,
            dependency_cache: true,
            publisher_proxy_address: DEFAULT_PUBLISHER_PROXY_ADDRESS.into(),
            trace_collector_endpoint: DEFAULT_TRACE_COLLECTOR_ENDPOINT.into(),
            defaults: Defaults::default(),
            build_platforms: Vec::new(),
        }
    }
}

impl Settings {
    /// The repository build Jobs of a namespace keep dependency layers in.
    pub fn dependency_cache_repo(&self, namespace: &str) -> String {
        format!(
            "{}/fnbuild-cache/{namespace}",
            self.registry_push_address.trim_end_matches('/')
        )
    }

    /// The push registry's `HOST[:PORT]` (what a bare `--insecure-registry` names).
    pub fn push_registry_host(&self) -> &str {
        self.registry_push_address.split('/').next().unwrap_or_default()
    }
}

impl Settings {
    /// The `fnbuild-controller run` flags that give these settings (for the controller's Deployment).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--builder-image={}", self.builder_image),
            format!("--builder-command={}", self.builder_command),
            format!("--registry-push-address={}", self.registry_push_address),
            format!("--registry-pull-address={}", self.registry_pull_address),
            format!("--registry-secret={}", self.registry_secret),
            format!("--registry-config-namespace={}", self.registry_config_namespace),
            format!("--package-registry-secret={}", self.package_registry_secret),
            format!("--cache-key-secret={}", self.cache_key_secret),
            format!("--build-deadline={}", self.build_deadline_seconds),
            format!("--git-poll-interval={}", self.git_poll_seconds),
            format!("--max-concurrent-builds={}", self.max_concurrent_builds),
            format!("--build-retry-delay={}", self.build_retry_seconds),
            format!("--target-cpu-utilization={}", self.target_cpu_utilization),
            format!("--default-function-profile={}", self.defaults.function_profile),
            format!("--default-build-profile={}", self.defaults.build_profile),
            format!("--publisher-proxy-address={}", self.publisher_proxy_address),
            format!("--trace-collector-endpoint={}", self.trace_collector_endpoint),
        ];
        for host in &self.insecure_registries {
            a.push(format!("--insecure-registry={host}"));
        }
        if self.build_host_network {
            a.push("--build-host-network".into());
        }
        if !self.dependency_cache {
            a.push("--no-dependency-cache".into());
        }
        for (runtime, image) in &self.base_images {
            a.push(format!("--base-image={runtime}={image}"));
        }
        if !self.build_platforms.is_empty() {
            a.push(format!("--build-platforms={}", self.build_platforms.join(",")));
        }
        a
    }
}
