//! The `Function` custom resource (`serverless.kyma-project.io/v1alpha2`), compatible with
//! Kyma's: the same field names and meanings, plus `status.imageTag` and
//! `status.observedGeneration`.
//!
//! Every field is optional on the wire where the API server might hold an object that our
//! validation rejects (a Function created while the webhook was bypassed must still be read,
//! and reported in its status, not break the controller's watch).

use k8s_openapi::api::core::v1::{EnvVar, PodSecurityContext, ResourceRequirements as K8sResources, SecurityContext};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group.
pub const GROUP: &str = "serverless.kyma-project.io";
/// The API version.
pub const VERSION: &str = "v1alpha2";

/// The runtimes a Function may name (the builder's embedded runtime definitions).
/// Runtimes Kyma deprecates: still built and run, with a warning at admission and in
/// ConfigurationReady's message (Kyma's words).
pub const DEPRECATED_RUNTIMES: &[&str] = &["nodejs20"];

/// The warning for a deprecated runtime, `None` for the others.
pub fn runtime_deprecation(runtime: &str) -> Option<String> {
    DEPRECATED_RUNTIMES
        .contains(&runtime)
        .then(|| format!("runtime {runtime} is deprecated and will be removed in the future"))
}

pub const RUNTIMES: &[&str] = &["nodejs20", "nodejs22", "nodejs24", "python312"];

/// A serverless function: its source, runtime and how to run it. The controller builds the
/// source into an image with fnbuild and runs it as a Deployment behind a Service.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serverless.kyma-project.io",
    version = "v1alpha2",
    kind = "Function",
    plural = "functions",
    namespaced,
    status = "FunctionStatus",
    category = "kyma-serverless",
    shortname = "fn",
    shortname = "fns",
    doc = "A serverless function: its source, runtime and how to run it. The controller builds the source into an image and runs it as a Deployment behind a Service.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.podSelector"
    ),
    printcolumn(
        name = "Configured",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='ConfigurationReady')].status"
    ),
    printcolumn(
        name = "Built",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='BuildReady')].status"
    ),
    printcolumn(
        name = "Running",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Running')].status"
    ),
    printcolumn(name = "Runtime", type_ = "string", json_path = ".spec.runtime"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".metadata.generation"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// The runtime that runs the function: `nodejs24` (Kyma's default), `nodejs22`, `python312` or
    /// `nodejs20` (deprecated in Kyma).
    #[schemars(extend("enum" = ["nodejs20", "nodejs22", "nodejs24", "python312"]))]
    pub runtime: String,

    /// A runtime image to build on instead of the runtime's default one (a registry reference the
    /// builder can pull). As in Kyma, the image is the runtime: its own server runs the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_image_override: Option<String>,

    /// The function's source: exactly one of `inline` or `gitRepository`.
    pub source: Source,

    /// The security context of the function's Pods. Each field given here replaces the
    /// controller's default for it (runAsUser, runAsGroup, fsGroup and supplementalGroups 1000,
    /// runAsNonRoot, the RuntimeDefault seccomp profile); the result is in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,

    /// The security context of the function's container. Each field given here replaces the
    /// controller's default for it (privileged false, all capabilities dropped, a read-only root
    /// filesystem, no privilege escalation, runAsNonRoot); the result is in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,

    /// Environment variables for the function's container (static values, or references to
    /// ConfigMaps and Secrets). The names FUNC_RUNTIME, FUNC_HANDLER, FUNC_PORT,
    /// FUNC_HANDLER_SOURCE, FUNC_HANDLER_DEPENDENCIES, MOD_NAME, NODE_PATH and PYTHONPATH are
    /// reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Resources for the function's Pods and for the build Job: a named profile or explicit
    /// requests and limits, for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_configuration: Option<ResourceConfiguration>,

    /// The number of the function's Pods (default 1). When `scaleConfig` is set, a
    /// HorizontalPodAutoscaler sets this field through the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 1))]
    pub replicas: Option<i32>,

    /// Autoscaling bounds: when minReplicas differs from maxReplicas, a HorizontalPodAutoscaler
    /// scales the function between them on CPU use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_config: Option<ScaleConfig>,

    /// Secrets to mount into the function's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_mounts: Option<Vec<SecretMount>>,

    /// Labels for the function's Pods (not under serverless.kyma-project.io/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations for the function's Pods (not under serverless.kyma-project.io/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Deprecated (Kyma): use spec.labels and spec.annotations. A template with labels or
    /// annotations is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

/// The repository and commit a Function from git was built from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub commit: String,
}

/// Kyma's deprecated `spec.template`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Where the function's code comes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The code itself, in the Function. Cannot be used together with gitRepository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineSource>,
    /// A Git repository holding the code. Cannot be used together with inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository: Option<GitRepositorySource>,
}

/// Inline source code.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineSource {
    /// The handler's full source code (handler.js / handler.py).
    #[schemars(length(min = 1))]
    pub source: String,
    /// The dependency file's content: package.json for Node.js, requirements.txt for Python.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<String>,
}

/// A Git repository with the function's code and dependency file.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySource {
    /// The repository's URL (http(s)://, git:// or ssh).
    pub url: String,
    /// The directory in the repository that holds the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// The branch, tag or commit to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// How to authenticate to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RepositoryAuth>,
}

/// Credentials for a Git repository.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryAuth {
    /// `basic` (user name and password or token) or `key` (SSH key).
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["basic", "key"]))]
    pub type_: String,
    /// The Secret, in the Function's namespace, that holds the credentials.
    pub secret_name: String,
}

/// Resources of the function's Pods and of its build Job.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceConfiguration {
    /// The build Job's resources. Profiles: local-dev, slow, normal (default), fast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<ResourceRequirements>,
    /// The function's resources. Profiles: XS, S, M, L (default), XL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<ResourceRequirements>,
}

/// A named resource profile or explicit requests and limits (not both).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// A predefined set of requests and limits. Cannot be used together with resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Explicit requests and limits. Cannot be used together with profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<K8sResources>,
}

/// Autoscaling bounds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleConfig {
    /// The fewest Pods to run (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// The most Pods to run (at least minReplicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

/// A Secret mounted into the function's container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretMount {
    /// The Secret's name, in the Function's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The absolute path in the container to mount it at.
    #[schemars(length(min = 1))]
    pub mount_path: String,
}

/// What the controller last saw and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// The runtime the function was last built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The base image the function is built on, as in Kyma: the runtimeImageOverride, or the
    /// runtime's base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_image: Option<String>,
    /// The image the function runs, by digest (REGISTRY/NAMESPACE.NAME@sha256:...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_image: Option<String>,
    /// The tag of functionImage: a hash of the image's inputs (uid, source, dependencies,
    /// runtime, base image). A new tag means a new build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// The function profile in use; `custom` for explicit resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_resource_profile: Option<String>,
    /// The build profile in use; `custom` for explicit resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_resource_profile: Option<String>,
    /// The number of the function's Pods (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the function's Pods (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
    /// The security context of the function's Pods: spec.podSecurityContext merged over the
    /// controller's restricted defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// The security context of the function's container: spec.containerSecurityContext merged
    /// over the controller's restricted defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// A Function from git: the commit built (Kyma's commit, baseDir, reference, and today's
    /// gitRepository with all four).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository: Option<GitRepositoryStatus>,
    /// The annotations of spec.annotations last put on the function's Pods (Kyma's
    /// functionAnnotations): those the controller removes when they leave the spec; others'
    /// annotations on the Pods (`kubectl rollout restart`) stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_annotations: Option<BTreeMap<String, String>>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ConfigurationReady, BuildReady and Running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One aspect of the Function's state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// ConfigurationReady, BuildReady or Running.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// Why, in one word (e.g. JobFailed, DeploymentReady, InvalidFunctionSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition types.
/// A condition's status, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

pub mod condition {
    pub const CONFIGURATION_READY: &str = "ConfigurationReady";
    pub const BUILD_READY: &str = "BuildReady";
    pub const RUNNING: &str = "Running";
}

/// Condition reasons.
pub mod reason {
    pub const INVALID_FUNCTION_SPEC: &str = "InvalidFunctionSpec";
    /// A Function from git: its reference resolved to a commit (Kyma's reasons).
    pub const SOURCE_UPDATED: &str = "SourceUpdated";
    pub const SOURCE_UPDATE_FAILED: &str = "SourceUpdateFailed";
    pub const CONFIGMAP_CREATED: &str = "ConfigMapCreated";
    pub const CONFIGMAP_UPDATED: &str = "ConfigMapUpdated";
    /// The API server refused the source ConfigMap (a quota, a policy): Kyma's reason.
    pub const CONFIGMAP_ERROR: &str = "ConfigMapError";
    pub const JOB_CREATED: &str = "JobCreated";
    pub const JOB_QUEUED: &str = "JobQueued";
    pub const JOB_RUNNING: &str = "JobRunning";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const JOB_FINISHED: &str = "JobFinished";
    pub const IMAGE_EXISTS: &str = "ImageExists";
    pub const DEPLOYMENT_CREATED: &str = "DeploymentCreated";
    pub const DEPLOYMENT_UPDATED: &str = "DeploymentUpdated";
    pub const DEPLOYMENT_WAITING: &str = "DeploymentWaiting";
    pub const DEPLOYMENT_FAILED: &str = "DeploymentFailed";
    pub const DEPLOYMENT_READY: &str = "DeploymentReady";
    /// The Deployment's minimum of available replicas is not met (Kyma's reason; Running=Unknown).
    pub const MIN_REPLICAS_NOT_AVAILABLE: &str = "MinReplicasNotAvailable";
    pub const SERVICE_CREATED: &str = "ServiceCreated";
    pub const SERVICE_UPDATED: &str = "ServiceUpdated";
    pub const HPA_CREATED: &str = "HorizontalPodAutoscalerCreated";
    pub const HPA_UPDATED: &str = "HorizontalPodAutoscalerUpdated";
    pub const NOT_OWNED: &str = "ResourceNotOwned";
}

impl FunctionStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Set a condition; `lastTransitionTime` changes only when the status does.
    pub fn set_condition(&mut self, type_: &str, status: Status, reason: &str, message: impl Into<String>, now: &str) {
        let status = status.as_str();
        let message = message.into();
        let message = if message.is_empty() { None } else { Some(message) };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.to_string());
                }
                c.status = status.to_string();
                c.reason = Some(reason.to_string());
                c.message = message;
            }
            None => {
                self.conditions.push(Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    last_transition_time: Some(now.to_string()),
                    reason: Some(reason.to_string()),
                    message,
                });
                let order = |t: &str| match t {
                    condition::CONFIGURATION_READY => 0,
                    condition::BUILD_READY => 1,
                    condition::RUNNING => 2,
                    _ => 3,
                };
                self.conditions.sort_by_key(|c| order(&c.type_));
            }
        }
    }

    pub fn remove_condition(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }
}

/// The CustomResourceDefinition. `nullable` is left out of the schema: Kubernetes 1.20 drops
/// the type of nullable fields when it publishes OpenAPI v2, and `kubectl explain` then cannot
/// describe them (null values of non-nullable fields are pruned by the API server anyway).
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut v = serde_json::to_value(Function::crd()).expect("the CRD serialises");
    strip_nullable(&mut v);
    serde_json::from_value(v).expect("the CRD deserialises")
}

fn strip_nullable(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("nullable");
            m.values_mut().for_each(strip_nullable);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_subresources_columns_and_descriptions() {
        let crd = super::crd();
        let v = serde_json::to_value(&crd).unwrap();
        assert_eq!(v["metadata"]["name"], "functions.serverless.kyma-project.io");
        let ver = &v["spec"]["versions"][0];
        assert_eq!(ver["name"], "v1alpha2");
        assert_eq!(ver["subresources"]["status"], serde_json::json!({}));
        assert_eq!(ver["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
        assert_eq!(ver["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
        assert_eq!(ver["subresources"]["scale"]["labelSelectorPath"], ".status.podSelector");
        let cols: Vec<&str> = ver["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Configured", "Built", "Running", "Runtime", "Version", "Age"]);
        assert_eq!(v["spec"]["names"]["shortNames"], serde_json::json!(["fn", "fns"]));
        let spec = &ver["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
        let runtime = &spec["properties"]["runtime"];
        assert_eq!(runtime["enum"], serde_json::json!(RUNTIMES));
        assert!(runtime["description"].as_str().unwrap().contains("nodejs20"));
        assert!(spec["properties"]["source"]["properties"]["inline"]["description"].is_string());
        assert!(spec["properties"]["env"]["items"]["properties"]["valueFrom"].is_object());
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(required, ["runtime", "source"]);
        assert!(!serde_json::to_string(&v).unwrap().contains("nullable"));
    }

    #[test]
    fn conditions_keep_transition_time_when_status_stays() {
        let mut s = FunctionStatus::default();
        s.set_condition(condition::RUNNING, Status::False, "DeploymentWaiting", "", "t1");
        s.set_condition(condition::BUILD_READY, Status::True, "JobFinished", "done", "t1");
        assert_eq!(s.conditions[0].type_, condition::BUILD_READY);
        s.set_condition(condition::RUNNING, Status::False, "DeploymentFailed", "x", "t2");
        assert_eq!(
            s.condition(condition::RUNNING).unwrap().last_transition_time.as_deref(),
            Some("t1")
        );
        s.set_condition(condition::RUNNING, Status::True, "DeploymentReady", "", "t3");
        let c = s.condition(condition::RUNNING).unwrap();
        assert_eq!(c.last_transition_time.as_deref(), Some("t3"));
        assert_eq!(c.message, None);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
