//! Validation of a Function: pure, shared by the validating webhook and the reconciler. Every
//! error names the field path (`spec.env[2].name`) and says what is allowed.
//!
//! Each rule stops a Function where Kyma's does ([`Stage`]): Kyma's CRD schema and CEL rules at
//! admission, its controller's validation (`internal/controller/validator`) in status, as
//! ConfigurationReady=False with reason InvalidFunctionSpec. fnbuild's own rules that keep a
//! build from reading what it must not (dependency paths, local base images, unconfined Pods)
//! and sources no ConfigMap can hold are refused at admission.

use super::resources::{
    build_profile, function_profile, parse_quantity, profile_names, BUILD_PROFILES, FUNCTION_PROFILES,
};
use super::types::{FunctionSpec, ResourceRequirements, RUNTIMES};
use std::collections::BTreeSet;
use std::fmt;

mod syntax;
pub use syntax::*;

/// Env names the runtime owns (Kyma's CEL rule on `spec.env`).
pub const RESERVED_ENV: &[&str] = &[
    "FUNC_RUNTIME",
    "FUNC_HANDLER",
    "FUNC_PORT",
    "FUNC_HANDLER_SOURCE",
    "FUNC_HANDLER_DEPENDENCIES",
    "MOD_NAME",
    "NODE_PATH",
    "PYTHONPATH",
];
/// Kyma's minimum function requests and limits (its `minRequestCPU` / `minRequestMemory`).
const MIN_FUNCTION_CPU: (&str, f64) = ("10m", 0.01);
const MIN_FUNCTION_MEMORY: (&str, f64) = ("16Mi", 16.0 * 1024.0 * 1024.0);
/// Label and annotation prefix the controller owns.
pub const RESERVED_PREFIX: &str = "serverless.kyma-project.io/";

/// Where a problem stops a Function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Refused by the webhook (Kyma: the CRD's schema and CEL rules).
    Admission,
    /// Admitted, then reported in status (Kyma: its controller's validation).
    Status,
}

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    pub stage: Stage,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All the problems of one Function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        write!(f, "invalid Function: {}", all.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    /// Whether the webhook refuses the Function (any problem is one admission refuses).
    pub fn refused_at_admission(&self) -> bool {
        self.0.iter().any(|e| e.stage == Stage::Admission)
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    /// A problem refused at admission.
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path, message, Stage::Admission);
    }
    /// A problem admitted and reported in status.
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path, message, Stage::Status);
    }
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>, stage: Stage) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
            stage,
        });
    }
}

/// Validate a Function's name (when known) and spec.
pub fn validate(name: Option<&str>, spec: &FunctionSpec) -> Result<(), ValidationErrors> {
    let mut e = Errors(Vec::new());
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        if let Err(why) = dns1035_label(name) {
            // Kyma checks no name; a Service cannot be made for it.
            e.report("metadata.name", format!("'{name}' {why}"));
        }
    }
    if !RUNTIMES.contains(&spec.runtime.as_str()) {
        e.add(
            "spec.runtime",
            format!(
                "'{}' is not a runtime; use one of: {}",
                spec.runtime,
                RUNTIMES.join(", ")
            ),
        );
    }
    if let Some(img) = &spec.runtime_image_override {
        let transport = [
            "oci:",
            "oci-archive:",
            "docker-archive:",
            "docker-daemon:",
            "dir:",
            "containers-storage:",
        ]
        .into_iter()
        .find(|t| img.starts_with(t));
        if let Some(t) = transport {
            e.add(
                "spec.runtimeImageOverride",
                format!("'{img}' names a local image ({t}); give a registry image such as registry.example.com/team/node:24"),
            );
        } else if let Err(err) = img
            .trim_start_matches("docker://")
            .parse::<fnbuild::oci::reference::Reference>()
        {
            e.add(
                "spec.runtimeImageOverride",
                format!("'{img}' is not an image reference: {err}"),
            );
        }
    }
    if let Some(t) = &spec.template {
        if t.labels.is_some() || t.annotations.is_some() {
            e.add(
                "spec.template",
                "Not supported: Use spec.labels and spec.annotations to label and/or annotate Function's Pods.",
            );
        }
    }
    validate_source(spec, &mut e);
    validate_env(spec, &mut e);
    if let Some(rc) = &spec.resource_configuration {
        if let Some(f) = &rc.function {
            validate_resources(
                "spec.resourceConfiguration.function",
                f,
                &mut e,
                FUNCTION_PROFILES,
                |n| function_profile(n).is_some(),
                true,
            );
        }
        if let Some(b) = &rc.build {
            validate_resources(
                "spec.resourceConfiguration.build",
                b,
                &mut e,
                BUILD_PROFILES,
                |n| build_profile(n).is_some(),
                false,
            );
        }
    }
    if let Some(r) = spec.replicas {
        if r < 0 {
            e.add("spec.replicas", format!("{r} is negative; use 0 or more"));
        }
    }
    if let Some(sc) = &spec.scale_config {
        match (sc.min_replicas, sc.max_replicas) {
            (Some(min), Some(max)) => {
                if min < 1 {
                    e.add("spec.scaleConfig.minReplicas", format!("{min} is less than 1"));
                }
                if max < 1 {
                    e.add("spec.scaleConfig.maxReplicas", format!("{max} is less than 1"));
                } else if max < min {
                    e.report(
                        "spec.scaleConfig.maxReplicas",
                        format!("{max} is less than minReplicas ({min})"),
                    );
                }
            }
            (None, _) => e.add("spec.scaleConfig.minReplicas", "is required"),
            (_, None) => e.add("spec.scaleConfig.maxReplicas", "is required"),
        }
    }
    if let Some(mounts) = &spec.secret_mounts {
        let mut paths = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, m) in mounts.iter().enumerate() {
            let p = format!("spec.secretMounts[{i}]");
            if m.secret_name.is_empty() {
                e.add(format!("{p}.secretName"), "is required");
            } else if let Err(why) = dns1123_subdomain(&m.secret_name) {
                e.report(format!("{p}.secretName"), format!("'{}' {why}", m.secret_name));
            } else if !names.insert(m.secret_name.as_str()) {
                e.report(format!("{p}.secretName"), "secretNames should be unique");
            }
            let mp = m.mount_path.trim_end_matches('/');
            if m.mount_path.is_empty() {
                e.add(format!("{p}.mountPath"), "is required");
            } else if !m.mount_path.starts_with('/') || mp.is_empty() || mp.split('/').any(|c| c == ".." || c == ".") {
                e.report(
                    format!("{p}.mountPath"),
                    format!(
                        "'{}' must be an absolute path other than / without . or ..",
                        m.mount_path
                    ),
                );
            } else if mp == "/tmp" {
                e.report(
                    format!("{p}.mountPath"),
                    "/tmp is the function's scratch directory; choose another path",
                );
            } else if !paths.insert(mp.to_string()) {
                e.report(
                    format!("{p}.mountPath"),
                    format!("'{}' is used by another secret mount", m.mount_path),
                );
            }
        }
    }
    if let Some(labels) = &spec.labels {
        for (k, v) in labels {
            let p = format!("spec.labels[{k}]");
            if k.starts_with(RESERVED_PREFIX) {
                e.add(
                    &p,
                    format!("keys under {RESERVED_PREFIX} are reserved for the controller"),
                );
            } else if k.len() > 63 {
                // Kyma's CEL rule `self.all(e, size(e)<64)` runs over the keys, prefix included.
                e.add(
                    &p,
                    format!("the key is {} characters; Kyma allows 63, its prefix included", k.len()),
                );
            } else if let Err(why) = qualified_name(k) {
                e.report(&p, format!("key '{k}' {why}"));
            }
            if let Err(why) = label_value(v) {
                e.report(&p, format!("value '{v}' {why}"));
            }
        }
    }
    if let Some(annotations) = &spec.annotations {
        for (k, v) in annotations {
            let p = format!("spec.annotations[{k}]");
            if k.starts_with(RESERVED_PREFIX) {
                e.add(
                    &p,
                    format!("keys under {RESERVED_PREFIX} are reserved for the controller"),
                );
            } else if k == "proxy.istio.io/config" {
                e.add(&p, "proxy.istio.io/config is not allowed: the controller sets it");
            } else if let Err(why) = qualified_name(k) {
                e.report(&p, format!("key '{k}' {why}"));
            } else if loosens_confinement(k, v) {
                e.add(
                    &p,
                    format!("'{v}' would run the Function without its AppArmor or seccomp profile; Functions keep the runtime's default"),
                );
            }
        }
    }
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(e.0))
    }
}

/// Pod annotations that take away the container's AppArmor or seccomp confinement.
fn loosens_confinement(key: &str, value: &str) -> bool {
    let confinement = key.starts_with("container.apparmor.security.beta.kubernetes.io/")
        || key == "seccomp.security.alpha.kubernetes.io/pod"
        || key.starts_with("container.seccomp.security.alpha.kubernetes.io/");
    confinement
        && value.trim() != "runtime/default"
        && value.trim() != "docker/default"
        && !value.starts_with("localhost/")
}

/// What a ConfigMap may hold (the API server refuses bigger objects), less room for its
/// metadata.
const CONFIG_MAP_DATA_LIMIT: usize = 1024 * 1024 - 16 * 1024;

fn validate_source(spec: &FunctionSpec, e: &mut Errors) {
    match (&spec.source.inline, &spec.source.git_repository) {
        (Some(_), Some(_)) => e.add("spec.source", "set exactly one of inline and gitRepository, not both"),
        (None, None) => e.add("spec.source", "set exactly one of inline and gitRepository"),
        (Some(inline), None) => {
            if inline.source.trim().is_empty() {
                e.add("spec.source.inline.source", "is empty; put the handler's code here");
            }
            let size = inline.source.len() + inline.dependencies.as_deref().map_or(0, str::len);
            if size > CONFIG_MAP_DATA_LIMIT {
                e.add(
                    "spec.source.inline",
                    format!(
                        "source and dependencies are {size} bytes; the ConfigMap that carries them holds at most {CONFIG_MAP_DATA_LIMIT}: use a git source, or keep large data out of the code"
                    ),
                );
            }
            let before = e.0.len();
            if let Some(deps) = inline.dependencies.as_deref().filter(|d| !d.trim().is_empty()) {
                let d = deps.trim();
                if spec.runtime.starts_with("nodejs") && !(d.starts_with('{') && d.ends_with('}')) {
                    e.report(
                        "spec.source.inline.dependencies",
                        "deps should start with '{' and end with '}'",
                    );
                } else if spec.runtime.starts_with("nodejs") {
                    // Kyma admits it and its npm install fails; here the build would not start.
                    match serde_json::from_str::<serde_json::Value>(deps) {
                        Ok(_) => {}
                        Err(err) => e.report(
                            "spec.source.inline.dependencies",
                            format!("is not valid JSON (a package.json is expected): {err}"),
                        ),
                    }
                }
            }
            // What the builder would refuse (local paths outside the function, included files
            // it does not have, ...), refused here with the builder's own words, so that
            // `kubectl apply` says it rather than a failed build.
            if e.0.len() == before {
                if let Err(err) = super::build_job::inline_plan(&spec.runtime, inline) {
                    e.add("spec.source.inline.dependencies", err.to_string());
                }
            }
        }
        (None, Some(git)) => {
            let url = git.url.trim();
            // Kyma admits any URL and its controller reports one it cannot use.
            if url.is_empty() {
                e.report("spec.source.gitRepository.url", "is required");
            } else if !["https://", "http://", "git://", "ssh://", "git@"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                e.report(
                    "spec.source.gitRepository.url",
                    format!("'{url}' must start with https://, http://, git://, ssh:// or git@"),
                );
            }
            if git.reference.as_deref().is_none_or(|r| r.trim().is_empty()) {
                e.add(
                    "spec.source.gitRepository.reference",
                    "is required (a branch, tag or commit)",
                );
            }
            if git.base_dir.as_deref().is_none_or(|r| r.trim().is_empty()) {
                e.add(
                    "spec.source.gitRepository.baseDir",
                    "is required (use / for the repository's root)",
                );
            } else if git
                .base_dir
                .as_deref()
                .is_some_and(|d| d.split('/').any(|c| c.trim() == ".."))
            {
                // The build would refuse it, and the Pod's subPath cannot hold it.
                e.report(
                    "spec.source.gitRepository.baseDir",
                    "'..' would leave the repository; give the function's directory from its root",
                );
            }
            if let Some(auth) = &git.auth {
                if auth.type_ != "basic" && auth.type_ != "key" {
                    e.add(
                        "spec.source.gitRepository.auth.type",
                        format!("'{}' must be basic or key", auth.type_),
                    );
                }
                if auth.secret_name.trim().is_empty() {
                    e.add(
                        "spec.source.gitRepository.auth.secretName",
                        "SecretName is required and cannot be empty",
                    );
                } else if let Err(why) = dns1123_subdomain(&auth.secret_name) {
                    e.report(
                        "spec.source.gitRepository.auth.secretName",
                        format!("'{}' {why}", auth.secret_name),
                    );
                }
            }
        }
    }
}

fn validate_env(spec: &FunctionSpec, e: &mut Errors) {
    let Some(env) = &spec.env else { return };
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let p = format!("spec.env[{i}]");
        if RESERVED_ENV.contains(&var.name.as_str()) {
            e.add(
                format!("{p}.name"),
                format!("{} is reserved (reserved: {})", var.name, RESERVED_ENV.join(", ")),
            );
        } else if let Err(why) = env_var_name(&var.name) {
            e.report(format!("{p}.name"), format!("'{}' {why}", var.name));
        } else if !seen.insert(var.name.as_str()) {
            e.report(format!("{p}.name"), format!("{} is set twice", var.name));
        }
        if let Some(from) = &var.value_from {
            if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
                e.report(format!("{p}.valueFrom"), "cannot be used together with value");
            }
            let sources = [
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
                from.field_ref.is_some(),
                from.resource_field_ref.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if sources != 1 {
                e.report(
                    format!("{p}.valueFrom"),
                    "set exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
                );
            }
        }
    }
}

/// `known`: whether a profile name is one. `minimums`: Kyma's minimum CPU and memory apply
/// (function resources; an unset CPU or memory in `limits` or `requests` counts as 0, as there).
fn validate_resources(
    path: &str,
    r: &ResourceRequirements,
    e: &mut Errors,
    profiles: &[super::resources::Profile],
    known: impl Fn(&str) -> bool,
    minimums: bool,
) {
    let res = match (&r.profile, &r.resources) {
        (Some(_), Some(_)) => return e.add(path, "set profile or resources, not both"),
        (Some(p), None) => {
            if !known(p) {
                e.add(
                    format!("{path}.profile"),
                    format!("'{p}' is not a profile; use one of: {}", profile_names(profiles)),
                );
            }
            return;
        }
        (None, Some(res)) => res,
        // Kyma's rule: exactly one of them (an empty `function: {}` is refused).
        (None, None) => return e.add(path, "set profile or resources"),
    };
    type Quantities =
        Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>;
    let mut parsed = |kind: &str, m: &Quantities| {
        let mut out = std::collections::BTreeMap::new();
        for (k, q) in m.iter().flatten() {
            let field = format!("{path}.resources.{kind}.{k}");
            if !resource_name(k) {
                e.report(
                    &field,
                    "is not a resource name: cpu, memory, ephemeral-storage, hugepages-<size> or a prefixed name such as nvidia.com/gpu",
                );
            }
            match parse_quantity(&q.0) {
                Some(v) if v >= 0.0 => {
                    out.insert(k.clone(), v);
                }
                Some(_) => e.report(&field, format!("'{}' is negative", q.0)),
                None => e.add(
                    &field,
                    format!("'{}' is not a quantity (e.g. 100m, 0.5, 128Mi, 1Gi)", q.0),
                ),
            }
        }
        out
    };
    let requests = parsed("requests", &res.requests);
    let limits = parsed("limits", &res.limits);
    for (k, req) in &requests {
        if let Some(lim) = limits.get(k) {
            if req > lim {
                e.report(
                    format!("{path}.resources.requests.{k}"),
                    format!(
                        "{} is more than the limit {}",
                        res.requests.as_ref().unwrap()[k].0,
                        res.limits.as_ref().unwrap()[k].0
                    ),
                );
            }
        }
    }
    if minimums {
        // Kyma's words: "Function limits cpu(5m) should be higher than minimal value (10m)".
        for (kind, given, set) in [("limits", &limits, &res.limits), ("requests", &requests, &res.requests)] {
            let Some(set) = set else { continue };
            let word = if kind == "limits" { "limits" } else { "request" };
            for (name, (min_text, min)) in [("cpu", MIN_FUNCTION_CPU), ("memory", MIN_FUNCTION_MEMORY)] {
                let v = given.get(name).copied().unwrap_or(0.0);
                if v < min {
                    let shown = set.get(name).map_or("0", |q| q.0.as_str());
                    e.report(
                        format!("{path}.resources.{kind}.{name}"),
                        format!("Function {word} {name}({shown}) should be higher than minimal value ({min_text})"),
                    );
                }
            }
        }
    }
}

/// A resource name a container may ask for.
fn resource_name(k: &str) -> bool {
    match k.split_once('/') {
        Some(_) => qualified_name(k).is_ok(),
        None => matches!(k, "cpu" | "memory" | "ephemeral-storage") || k.starts_with("hugepages-"),
    }
}

pub mod cel;
#[cfg(test)]
mod kyma_cases;
#[cfg(test)]
mod tests;
