//! The objects a Function owns, as pure functions of the Function (defaults applied) and the
//! controller's settings: ConfigMap, build Job, Deployment, Service, HorizontalPodAutoscaler.
//!
//! Only fields that Kubernetes 1.20 knows are set, and quantities are written in their
//! canonical form, so what the API server stores reads back equal (see `compare`).
//! (Over 600 lines because of its tests, from line ~515.)

use super::resources::{build_profile, function_profile};
use super::settings::Settings;
use super::types::{Function, ResourceRequirements as ProfileOrResources, GROUP, VERSION};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v1::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use super::build_job::{
    build_job, names_packages, BaseArg, BuildInputs, GitBuild, BUILD_CONTAINER, INSTALL_CONTAINER,
};

pub const LABEL_FUNCTION_NAME: &str = "serverless.kyma-project.io/function-name";
pub const LABEL_MANAGED_BY: &str = "serverless.kyma-project.io/managed-by";
pub const MANAGED_BY: &str = "function-controller";
pub const LABEL_UUID: &str = "serverless.kyma-project.io/uuid";
pub const LABEL_RESOURCE: &str = "serverless.kyma-project.io/resource";
pub const LABEL_IMAGE_TAG: &str = "serverless.kyma-project.io/image-tag";
pub const LABEL_BUILD_ATTEMPT: &str = "serverless.kyma-project.io/build-attempt";
pub const ANNOTATION_IMAGE: &str = "serverless.kyma-project.io/image";

/// The port the function's server listens on.
pub const FUNCTION_PORT: i32 = 8080;
/// The user the function and the builder run as.
pub const RUN_AS_USER: i64 = 1000;
/// Where the build Job mounts the source ConfigMap.
pub const SOURCE_DIR: &str = "/src";
/// Where the build Job mounts the registry Secret (as `config.json`): its DOCKER_CONFIG.
pub const DOCKER_CONFIG_DIR: &str = "/docker-config";
/// Where the build Job mounts the package-registry Secret.
pub const PACKAGE_REGISTRY_DIR: &str = "/package-registry";

/// The Pod label Kyma's tooling (NetworkPolicies, PodMonitors, Istio rules) selects a
/// Function's Pods by: `app.kubernetes.io/name: <function>`.
pub const LABEL_APP_NAME: &str = "app.kubernetes.io/name";
/// The Function Pods' Istio annotation: the sidecar is up before the function starts (else its
/// first outgoing calls fail), as Kyma sets it.
pub const ANNOTATION_ISTIO_PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const ISTIO_HOLD_UNTIL_PROXY_STARTS: &str = "{ \"holdApplicationUntilProxyStarts\": true }";

/// Labels on everything a Function owns (with its own `metadata.labels`, see [`meta`]).
pub fn labels(f: &Function) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_FUNCTION_NAME.to_string(), f.name_any()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_UUID.to_string(), f.uid().unwrap_or_default()),
    ])
}

/// The labels that select the function's Pods.
pub fn selector_labels(f: &Function) -> BTreeMap<String, String> {
    let mut l = labels(f);
    l.insert(LABEL_RESOURCE.to_string(), "deployment".to_string());
    l
}

/// `status.podSelector`: the selector as a string (`k=v,k=v`).
pub fn pod_selector(f: &Function) -> String {
    selector_labels(f)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owner reference that ties an object to its Function (deleting the Function deletes it).
pub fn owner_reference(f: &Function) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "Function".into(),
        name: f.name_any(),
        uid: f.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An owned object's metadata: its `labels` over the Function's own `metadata.labels` (which
/// reach everything it owns, as in Kyma; ours win a clash), owned by the Function.
pub(super) fn meta(f: &Function, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    let mut all = f.metadata.labels.clone().unwrap_or_default();
    all.extend(labels);
    ObjectMeta {
        name: Some(name),
        namespace: f.namespace(),
        labels: Some(all),
        owner_references: Some(vec![owner_reference(f)]),
        ..Default::default()
    }
}

/// The image repository of a Function: `NAMESPACE.NAME`. Neither a namespace (a DNS label) nor
/// a Function's name (a DNS-1035 label) can hold a dot, so two Functions never share one; with
/// Kyma's `NAMESPACE-NAME`, `team-a`/`api` and `team`/`a-api` would push to the same repository.
pub fn repository(f: &Function) -> String {
    format!("{}.{}", f.namespace().unwrap_or_default(), f.name_any())
}

/// Where the build pushes: `PUSH/NAMESPACE.NAME:TAG`.
pub fn push_reference(f: &Function, s: &Settings, tag: &str) -> String {
    format!(
        "{}/{}:{tag}",
        s.registry_push_address.trim_end_matches('/'),
        repository(f)
    )
}

/// What the Deployment runs: `PULL/NAMESPACE.NAME@DIGEST`.
pub fn pull_image(f: &Function, s: &Settings, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        s.registry_pull_address.trim_end_matches('/'),
        repository(f)
    )
}

/// The base image: what goes into the image tag, and the builder's option for it (none when the
/// runtime's built-in default is used).
pub fn base_image(f: &Function, s: &Settings) -> (String, Option<BaseArg>) {
    if let Some(o) = f.spec.runtime_image_override.as_deref().filter(|o| !o.is_empty()) {
        // A Function's author names a registry image, never a file or daemon of the builder's:
        // `docker://` keeps the builder from reading `oci:x` or `docker-daemon:y` as such.
        let o = o.trim_start_matches("docker://");
        // Kyma's override is a runtime image: its own server runs the function.
        return (o.to_string(), Some(BaseArg::RuntimeImage(format!("docker://{o}"))));
    }
    if let Some(b) = s.base_images.get(&f.spec.runtime) {
        return (b.clone(), Some(BaseArg::Base(b.clone())));
    }
    (default_base_image(&f.spec.runtime), None)
}

/// A runtime's built-in base image (from its runtime.toml; read once per runtime).
pub fn default_base_image(runtime: &str) -> String {
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(runtime) {
        return b.clone();
    }
    let base = fnbuild::function::runtime::Runtimes::Embedded
        .load(runtime)
        .map(|r| r.spec.base_image)
        .unwrap_or_default();
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(runtime.to_string(), base.clone());
    base
}

/// The image tag: a hash of everything that goes into the image (uid, source, dependencies,
/// runtime, base image, and the platforms when there are several). Env, replicas and resources
/// are not in it: changing them never rebuilds.
pub fn image_tag(f: &Function, base: &str, git: Option<&GitBuild>, platforms: &[String]) -> String {
    let inline = f.spec.source.inline.as_ref();
    let mut h = Sha256::new();
    let mut parts = vec![
        f.uid().unwrap_or_default(),
        inline.map(|i| i.source.clone()).unwrap_or_default(),
        inline.and_then(|i| i.dependencies.clone()).unwrap_or_default(),
        f.spec.runtime.clone(),
        base.to_string(),
    ];
    // A git source's inputs: the commit and the directory (an inline tag stays as it was).
    if let Some(g) = git {
        parts.extend([g.url.clone(), g.commit.clone(), g.dir.clone()]);
    }
    // An index: a node of a new architecture builds anew. One platform is the builder's own, as
    // before there were indexes (its tags stay as they were).
    if platforms.len() > 1 {
        parts.push(format!("platforms {}", platforms.join(",")));
    }
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())[..32].to_string()
}

/// Cut a name prefix so that `prefix + suffix` fits 63 characters (and does not end in '-').
fn fit(prefix: &str, room: usize) -> &str {
    let cut = &prefix[..prefix.len().min(room)];
    cut.trim_end_matches('-')
}

/// The build Job's name: `NAME-build-TAG10-ATTEMPT`, at most 63 characters (the job-name label).
pub fn job_name(f: &Function, tag: &str, attempt: u32) -> String {
    let suffix = format!("-build-{}-{attempt}", &tag[..10.min(tag.len())]);
    format!("{}{suffix}", fit(&f.name_any(), 63 - suffix.len()))
}

/// The ConfigMap with the inline source, under Kyma's keys (`source`, `dependencies`); the
/// builder maps them to the runtime's file names when it reads the mount.
pub fn config_map(f: &Function) -> ConfigMap {
    let mut data = BTreeMap::new();
    if let Some(inline) = &f.spec.source.inline {
        data.insert("source".to_string(), inline.source.clone());
        if let Some(d) = inline.dependencies.as_ref().filter(|d| !d.is_empty()) {
            data.insert("dependencies".to_string(), d.clone());
        }
    }
    ConfigMap {
        metadata: meta(f, f.name_any(), labels(f)),
        data: Some(data),
        ..Default::default()
    }
}

/// The profile name status reports for explicit resources (Kyma's word).
pub const CUSTOM_PROFILE: &str = "custom";

/// Resolve a profile or explicit resources, and name what is in use as Kyma's status does: the
/// profile, or `custom` for explicit resources.
pub fn resolve_resources(
    r: Option<&ProfileOrResources>,
    lookup: fn(&str) -> Option<&'static super::resources::Profile>,
    default_profile: &str,
) -> (ResourceRequirements, Option<String>) {
    match r {
        Some(ProfileOrResources {
            resources: Some(res),
            profile: None,
        }) => (
            ResourceRequirements {
                requests: res.requests.clone(),
                limits: res.limits.clone(),
                ..Default::default()
            },
            Some(CUSTOM_PROFILE.to_string()),
        ),
        other => {
            let name = other
                .and_then(|r| r.profile.clone())
                .unwrap_or_else(|| default_profile.to_string());
            let p = lookup(&name).or_else(|| lookup(default_profile));
            (
                p.map(|p| p.requirements()).unwrap_or_default(),
                p.map(|p| p.name.to_string()),
            )
        }
    }
}

pub fn function_resources(f: &Function, s: &Settings) -> (ResourceRequirements, Option<String>) {
    let r = f
        .spec
        .resource_configuration
        .as_ref()
        .and_then(|rc| rc.function.as_ref());
    resolve_resources(r, function_profile, &s.defaults.function_profile)
}

pub fn build_resources(f: &Function, s: &Settings) -> (ResourceRequirements, Option<String>) {
    let r = f.spec.resource_configuration.as_ref().and_then(|rc| rc.build.as_ref());
    resolve_resources(r, build_profile, &s.defaults.build_profile)
}

pub(super) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub(super) fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

pub(super) fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

pub(super) fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

/// The registry Secret's `.dockerconfigjson` as `config.json` (for `DOCKER_CONFIG`), in a
/// volume `name`; optional, so that a registry without credentials needs no Secret.
pub(super) fn docker_config_volume(name: &str, secret: &str) -> Volume {
    Volume {
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(secret.into()),
            optional: Some(true),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: ".dockerconfigjson".into(),
                path: "config.json".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..volume(name)
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: if read_only { Some(true) } else { None },
        ..Default::default()
    }
}

/// The function's Deployment, running `image` (by digest).
pub fn deployment(f: &Function, s: &Settings, image: &str) -> Deployment {
    let name = f.name_any();
    let namespace = f.namespace().unwrap_or_default();
    let mut env_vars = vec![
        env("FUNC_RUNTIME", &f.spec.runtime),
        env("FUNC_NAME", &name),
        env("SERVICE_NAMESPACE", &namespace),
        env("FUNC_HANDLER", "main"),
        env("MOD_NAME", "handler"),
        env("FUNC_PORT", &FUNCTION_PORT.to_string()),
    ];
    // The platform's addresses, as Kyma wires them; a Function that names one itself keeps its own.
    let own = |n: &str| f.spec.env.iter().flatten().any(|e| e.name == n);
    for (n, v) in [
        ("TRACE_COLLECTOR_ENDPOINT", &s.trace_collector_endpoint),
        ("PUBLISHER_PROXY_ADDRESS", &s.publisher_proxy_address),
    ] {
        if !own(n) && !v.is_empty() {
            env_vars.push(env(n, v));
        }
    }
    env_vars.extend(f.spec.env.iter().flatten().cloned());

    let mut volumes = vec![Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..volume("tmp")
    }];
    let mut mounts = vec![mount("tmp", "/tmp", false)];
    for (i, m) in f.spec.secret_mounts.iter().flatten().enumerate() {
        let vname = format!("secret-mount-{i}");
        volumes.push(Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(m.secret_name.clone()),
                ..Default::default()
            }),
            ..volume(&vname)
        });
        mounts.push(mount(&vname, &m.mount_path, true));
    }

    let probe = |period: i32, failures: i32, timeout: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(FUNCTION_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Default::default()
    };
    let (resources, _) = function_resources(f, s);
    let container = Container {
        name: "function".into(),
        image: Some(image.to_string()),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: FUNCTION_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Kyma's start-up budget, 150 s: a Function that imports for a minute is not killed. Asked
        // every second rather than Kyma's 5 s (30 × 5 s), and readiness every second too: a new
        // Pod takes traffic (and a rollout moves on) as soon as it answers, not up to 5 s later;
        // /healthz costs the server next to nothing. Liveness as Kyma's: 3 × 5 s, 4 s each.
        startup_probe: Some(probe(1, 150, 1)),
        readiness_probe: Some(probe(1, 1, 2)),
        liveness_probe: Some(probe(5, 3, 4)),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        security_context: Some(super::security::function_container(f)),
        ..Default::default()
    };

    let mut pod_labels: BTreeMap<String, String> = f.spec.labels.clone().unwrap_or_default();
    pod_labels.extend(selector_labels(f));
    pod_labels.insert(LABEL_APP_NAME.into(), name.clone());
    let mut annotations = f.spec.annotations.clone().unwrap_or_default();
    annotations.insert(
        ANNOTATION_ISTIO_PROXY_CONFIG.into(),
        ISTIO_HOLD_UNTIL_PROXY_STARTS.into(),
    );
    Deployment {
        metadata: meta(f, name, labels(f)),
        spec: DeploymentSpec {
            replicas: Some(f.spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(f)),
                match_expressions: None,
            },
            // Old ReplicaSets are not kept, as in Kyma (a rollback is a new build of the old source).
            revision_history_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    image_pull_secrets: Some(vec![LocalObjectReference {
                        name: s.registry_secret.clone(),
                    }]),
                    automount_service_account_token: Some(false),
                    security_context: Some(super::security::function_pod(f)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The function's Service: port 80 (`http`) to the Pods' 8080, with Kyma's annotations for
/// Prometheus's annotation-based discovery (the runtimes serve `/metrics` on 8080).
pub fn service(f: &Function) -> Service {
    let mut metadata = meta(f, f.name_any(), labels(f));
    metadata.annotations = Some(BTreeMap::from([
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
        ("prometheus.io/port".to_string(), FUNCTION_PORT.to_string()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
    ]));
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(f)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(FUNCTION_PORT)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The HorizontalPodAutoscaler (autoscaling/v1), scaling the Function itself (its scale
/// subresource), when minReplicas differs from maxReplicas; `None` otherwise.
pub fn hpa(f: &Function, s: &Settings) -> Option<HorizontalPodAutoscaler> {
    let sc = f.spec.scale_config.as_ref()?;
    let (min, max) = (sc.min_replicas?, sc.max_replicas?);
    if min == max {
        return None;
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta(f, f.name_any(), labels(f)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(format!("{GROUP}/{VERSION}")),
                kind: "Function".into(),
                name: f.name_any(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            target_cpu_utilization_percentage: Some(s.target_cpu_utilization),
        },
        ..Default::default()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::defaults::apply_defaults;
    use crate::types::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    pub(crate) fn function() -> Function {
        let mut f = Function::new(
            "hello",
            FunctionSpec {
                runtime: "nodejs20".into(),
                source: Source {
                    inline: Some(InlineSource {
                        source: "module.exports = { main: () => 'hi' }".into(),
                        dependencies: Some(r#"{"name":"hello"}"#.into()),
                    }),
                    git_repository: None,
                },
                env: Some(vec![env("GREETING", "hi")]),
                labels: Some(BTreeMap::from([("team".into(), "a".into())])),
                annotations: Some(BTreeMap::from([("example.com/note".into(), "x".into())])),
                secret_mounts: Some(vec![SecretMount {
                    secret_name: "creds".into(),
                    mount_path: "/etc/creds".into(),
                }]),
                ..Default::default()
            },
        );
        f.metadata.namespace = Some("ns1".into());
        f.metadata.uid = Some("1111-2222".into());
        apply_defaults(&mut f.spec);
        f
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            builder_image: "reg.local/fnbuild:1".into(),
            registry_push_address: "registry.push:5000".into(),
            registry_pull_address: "localhost:5000".into(),
            insecure_registries: vec!["registry.push:5000".into()],
            ..Default::default()
        }
    }

    pub(crate) fn owned_by_function(meta: &ObjectMeta) {
        let o = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(o.api_version, "serverless.kyma-project.io/v1alpha2");
        assert_eq!(o.kind, "Function");
        assert_eq!(o.name, "hello");
        assert_eq!(o.uid, "1111-2222");
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("ns1"));
        let l = meta.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_FUNCTION_NAME], "hello");
        assert_eq!(l[LABEL_MANAGED_BY], "function-controller");
        assert_eq!(l[LABEL_UUID], "1111-2222");
    }

    #[test]
    fn tag_depends_on_image_inputs_only() {
        let f = function();
        let t = image_tag(&f, "node:20-slim", None, &[]);
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(t, image_tag(&f.clone(), "node:20-slim", None, &[]));
        let mut g = f.clone();
        g.spec.env = None;
        g.spec.replicas = Some(5);
        g.spec.resource_configuration = None;
        assert_eq!(
            image_tag(&g, "node:20-slim", None, &[]),
            t,
            "env, replicas and resources do not rebuild"
        );
        assert_ne!(image_tag(&f, "node:22-slim", None, &[]), t);
        let mut g = f.clone();
        g.spec.source.inline.as_mut().unwrap().source.push(' ');
        assert_ne!(image_tag(&g, "node:20-slim", None, &[]), t);
        let mut g = f.clone();
        g.spec.source.inline.as_mut().unwrap().dependencies = None;
        assert_ne!(image_tag(&g, "node:20-slim", None, &[]), t);
        let mut g = f.clone();
        g.metadata.uid = Some("other".into());
        assert_ne!(image_tag(&g, "node:20-slim", None, &[]), t);
        let mut g = f.clone();
        g.spec.runtime = "nodejs22".into();
        assert_ne!(image_tag(&g, "node:20-slim", None, &[]), t);
        // Length-prefixed parts: moving text between fields changes the tag.
        let mut a = f.clone();
        a.spec.source.inline = Some(InlineSource {
            source: "ab".into(),
            dependencies: Some("c".into()),
        });
        let mut b = f.clone();
        b.spec.source.inline = Some(InlineSource {
            source: "a".into(),
            dependencies: Some("bc".into()),
        });
        assert_ne!(image_tag(&a, "x", None, &[]), image_tag(&b, "x", None, &[]));
    }

    #[test]
    fn base_images() {
        let mut f = function();
        let mut s = settings();
        assert_eq!(base_image(&f, &s), ("node:20-slim".into(), None));
        s.base_images.insert("nodejs20".into(), "reg.local/node:20".into());
        assert_eq!(
            base_image(&f, &s),
            (
                "reg.local/node:20".into(),
                Some(BaseArg::Base("reg.local/node:20".into()))
            )
        );
        f.spec.runtime_image_override = Some("reg.local/custom:1".into());
        assert_eq!(
            base_image(&f, &s),
            (
                "reg.local/custom:1".into(),
                Some(BaseArg::RuntimeImage("docker://reg.local/custom:1".into()))
            )
        );
    }

    #[test]
    fn two_functions_never_share_a_repository() {
        let named = |ns: &str, name: &str| {
            let mut f = function();
            f.metadata.namespace = Some(ns.into());
            f.metadata.name = Some(name.into());
            repository(&f)
        };
        assert_eq!(named("team-a", "api"), "team-a.api");
        assert_ne!(named("team-a", "api"), named("team", "a-api"));
        assert!(named("team-a", "api")
            .parse::<fnbuild::oci::reference::Reference>()
            .is_ok());
    }

    #[test]
    fn config_map_fields() {
        let f = function();
        let cm = config_map(&f);
        assert_eq!(cm.metadata.name.as_deref(), Some("hello"));
        owned_by_function(&cm.metadata);
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["source"], "module.exports = { main: () => 'hi' }");
        assert_eq!(data["dependencies"], r#"{"name":"hello"}"#);
        let mut g = f.clone();
        g.spec.source.inline.as_mut().unwrap().dependencies = None;
        assert_eq!(config_map(&g).data.unwrap().keys().collect::<Vec<_>>(), ["source"]);
    }

    #[test]
    fn job_names_fit_63() {
        let mut f = function();
        f.metadata.name = Some(format!("{}-x", "a".repeat(60)));
        let n = job_name(&f, &"f".repeat(32), 123);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-build-ffffffffff-123"));
        assert!(!n.contains("--"));
    }

    #[test]
    fn deployment_fields() {
        let f = function();
        let s = settings();
        let image = "localhost:5000/ns1.hello@sha256:abc";
        let d = deployment(&f, &s, image);
        assert_eq!(d.metadata.name.as_deref(), Some("hello"));
        owned_by_function(&d.metadata);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let sel = spec.selector.match_labels.unwrap();
        assert_eq!(sel, selector_labels(&f));
        assert_eq!(sel[LABEL_RESOURCE], "deployment");
        let tm = spec.template.metadata.unwrap();
        let tl = tm.labels.unwrap();
        assert_eq!(tl["team"], "a");
        for (k, v) in &sel {
            assert_eq!(&tl[k], v);
        }
        assert_eq!(tl[LABEL_APP_NAME], "hello");
        let annotations = tm.annotations.unwrap();
        assert_eq!(annotations["example.com/note"], "x");
        assert_eq!(
            annotations["proxy.istio.io/config"],
            r#"{ "holdApplicationUntilProxyStarts": true }"#
        );
        assert_eq!(spec.revision_history_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.image_pull_secrets.unwrap()[0].name,
            "serverless-registry-config-default"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let c = &pod.containers[0];
        assert_eq!(c.name, "function");
        assert_eq!(c.image.as_deref(), Some(image));
        let envs: Vec<(String, String)> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap()))
            .collect();
        let want = [
            ("FUNC_RUNTIME", "nodejs20"),
            ("FUNC_NAME", "hello"),
            ("SERVICE_NAMESPACE", "ns1"),
            ("FUNC_HANDLER", "main"),
            ("MOD_NAME", "handler"),
            ("FUNC_PORT", "8080"),
            (
                "TRACE_COLLECTOR_ENDPOINT",
                "http://telemetry-otlp-traces.kyma-system.svc.cluster.local:4318/v1/traces",
            ),
            (
                "PUBLISHER_PROXY_ADDRESS",
                "http://eventing-publisher-proxy.kyma-system.svc.cluster.local/publish",
            ),
            ("GREETING", "hi"),
        ];
        assert_eq!(envs, want.map(|(a, b)| (a.to_string(), b.to_string())));
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port, port.protocol.as_deref()),
            (Some("http"), 8080, Some("TCP"))
        );
        let (startup, ready, live) = (
            c.startup_probe.as_ref().unwrap(),
            c.readiness_probe.as_ref().unwrap(),
            c.liveness_probe.as_ref().unwrap(),
        );
        // Kyma's 150 s start-up budget, and its liveness probe.
        assert_eq!(
            startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
            150
        );
        assert_eq!(ready.period_seconds, Some(1));
        assert_eq!(
            (live.period_seconds, live.failure_threshold, live.timeout_seconds),
            (Some(5), Some(3), Some(4))
        );
        for p in [startup, ready, live] {
            let g = p.http_get.as_ref().unwrap();
            assert_eq!(g.path.as_deref(), Some("/healthz"));
            assert_eq!(g.port, IntOrString::Int(8080));
        }
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("400m".into()));
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("512Mi".into()));
        assert_eq!(r.limits.as_ref().unwrap()["cpu"], Quantity("800m".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("1Gi".into()));
        let mounts = serde_json::to_value(c.volume_mounts.as_ref().unwrap()).unwrap();
        assert_eq!(
            mounts,
            json!([{"name": "tmp", "mountPath": "/tmp"}, {"name": "secret-mount-0", "mountPath": "/etc/creds", "readOnly": true}])
        );
        let vols = serde_json::to_value(pod.volumes.unwrap()).unwrap();
        assert_eq!(
            vols,
            json!([{"name": "tmp", "emptyDir": {}}, {"name": "secret-mount-0", "secret": {"secretName": "creds"}}])
        );
    }

    #[test]
    fn deployment_takes_explicit_resources_and_replicas() {
        let mut f = function();
        f.spec.replicas = Some(3);
        let res = k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("300Mi".into()))])),
            ..Default::default()
        };
        f.spec
            .resource_configuration
            .get_or_insert_with(Default::default)
            .function = Some(ProfileOrResources {
            profile: None,
            resources: Some(res.clone()),
        });
        let d = deployment(&f, &settings(), "x@sha256:1");
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.template.spec.unwrap().containers[0].resources.as_ref().unwrap(),
            &res
        );
        assert_eq!(function_resources(&f, &settings()).1.as_deref(), Some("custom"));
        f.spec.resource_configuration = None;
        assert_eq!(function_resources(&f, &settings()).1.as_deref(), Some("L"));
    }

    #[test]
    fn a_functions_own_platform_env_wins_and_an_empty_setting_sets_none() {
        let mut f = function();
        f.spec.env = Some(vec![env("PUBLISHER_PROXY_ADDRESS", "http://mine/publish")]);
        let s = Settings {
            trace_collector_endpoint: String::new(),
            ..settings()
        };
        let d = deployment(&f, &s, "x@sha256:1");
        let c = &d.spec.template.spec.unwrap().containers[0];
        let named = |n: &str| -> Vec<String> {
            c.env
                .iter()
                .flatten()
                .filter(|e| e.name == n)
                .map(|e| e.value.clone().unwrap())
                .collect()
        };
        assert_eq!(named("PUBLISHER_PROXY_ADDRESS"), ["http://mine/publish"]);
        assert!(named("TRACE_COLLECTOR_ENDPOINT").is_empty());
    }

    #[test]
    fn the_functions_labels_reach_what_it_owns_and_ours_win() {
        let mut f = function();
        f.metadata.labels = Some(BTreeMap::from([
            ("app.example.com/team".to_string(), "payments".to_string()),
            (LABEL_MANAGED_BY.to_string(), "someone-else".to_string()),
        ]));
        let s = settings();
        let image = "x@sha256:1";
        for labels in [
            config_map(&f).metadata.labels,
            deployment(&f, &s, image).metadata.labels,
            service(&f).metadata.labels,
        ] {
            let l = labels.unwrap();
            assert_eq!(l["app.example.com/team"], "payments");
            assert_eq!(l[LABEL_MANAGED_BY], MANAGED_BY);
        }
        // Selectors are immutable: the Function's labels never enter them.
        let d = deployment(&f, &s, image);
        assert_eq!(d.spec.selector.match_labels.unwrap(), selector_labels(&f));
    }

    #[test]
    fn service_fields() {
        let f = function();
        let svc = service(&f);
        assert_eq!(svc.metadata.name.as_deref(), Some("hello"));
        owned_by_function(&svc.metadata);
        let annotations = svc.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations,
            BTreeMap::from([
                ("prometheus.io/path".to_string(), "/metrics".to_string()),
                ("prometheus.io/port".to_string(), "8080".to_string()),
                ("prometheus.io/scrape".to_string(), "true".to_string()),
            ])
        );
        let spec = serde_json::to_value(svc.spec.unwrap()).unwrap();
        assert_eq!(
            spec,
            json!({
                "type": "ClusterIP",
                "selector": selector_labels(&f),
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            })
        );
    }

    #[test]
    fn hpa_fields() {
        let mut f = function();
        assert!(hpa(&f, &settings()).is_none(), "no scaleConfig, no HPA");
        f.spec.scale_config = Some(ScaleConfig {
            min_replicas: Some(2),
            max_replicas: Some(2),
        });
        assert!(hpa(&f, &settings()).is_none(), "min = max, no HPA");
        f.spec.scale_config = Some(ScaleConfig {
            min_replicas: Some(1),
            max_replicas: Some(4),
        });
        let h = hpa(&f, &settings()).unwrap();
        assert_eq!(h.metadata.name.as_deref(), Some("hello"));
        owned_by_function(&h.metadata);
        let spec = serde_json::to_value(h.spec).unwrap();
        assert_eq!(
            spec,
            json!({
                "scaleTargetRef": {"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function", "name": "hello"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetCPUUtilizationPercentage": 50,
            })
        );
    }

    #[test]
    fn pod_selector_string() {
        assert_eq!(
            pod_selector(&function()),
            "serverless.kyma-project.io/function-name=hello,serverless.kyma-project.io/managed-by=function-controller,serverless.kyma-project.io/resource=deployment,serverless.kyma-project.io/uuid=1111-2222"
        );
    }
}
