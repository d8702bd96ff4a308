//! Validation of a Function: pure, shared by the validating webhook and the reconciler. Every
//! error names the field path (`spec.env[2].name`) and says what is allowed.
//! (Over 600 lines because of its tests, from line ~505: one rejected Function per case.)

use super::resources::{
    build_profile, function_profile, parse_quantity, profile_names, BUILD_PROFILES, FUNCTION_PROFILES,
};
use super::types::{FunctionSpec, ResourceRequirements, RUNTIMES};
use std::collections::BTreeSet;
use std::fmt;

/// Env names the runtime owns.
pub const RESERVED_ENV: &[&str] = &[
    "FUNC_RUNTIME",
    "FUNC_HANDLER",
    "FUNC_PORT",
    "MOD_NAME",
    "NODE_PATH",
    "PYTHONPATH",
];
/// Label and annotation prefix the controller owns.
pub const RESERVED_PREFIX: &str = "serverless.kyma-project.io/";

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
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

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validate a Function's name (when known) and spec.
pub fn validate(name: Option<&str>, spec: &FunctionSpec) -> Result<(), ValidationErrors> {
    let mut e = Errors(Vec::new());
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        if let Err(why) = dns1035_label(name) {
            e.add("metadata.name", format!("'{name}' {why}"));
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
            );
        }
        if let Some(b) = &rc.build {
            validate_resources("spec.resourceConfiguration.build", b, &mut e, BUILD_PROFILES, |n| {
                build_profile(n).is_some()
            });
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
                if max < min {
                    e.add(
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
        for (i, m) in mounts.iter().enumerate() {
            let p = format!("spec.secretMounts[{i}]");
            if let Err(why) = dns1123_subdomain(&m.secret_name) {
                e.add(format!("{p}.secretName"), format!("'{}' {why}", m.secret_name));
            }
            let mp = m.mount_path.trim_end_matches('/');
            if !m.mount_path.starts_with('/') || mp.is_empty() || mp.split('/').any(|c| c == ".." || c == ".") {
                e.add(
                    format!("{p}.mountPath"),
                    format!(
                        "'{}' must be an absolute path other than / without . or ..",
                        m.mount_path
                    ),
                );
            } else if mp == "/tmp" {
                e.add(
                    format!("{p}.mountPath"),
                    "/tmp is the function's scratch directory; choose another path",
                );
            } else if !paths.insert(mp.to_string()) {
                e.add(
                    format!("{p}.mountPath"),
                    format!("'{}' is used by another secret mount", m.mount_path),
                );
            }
        }
    }
    if let Some(labels) = &spec.labels {
        for (k, v) in labels {
            let p = format!("spec.labels[{k}]");
            if let Err(why) = qualified_name(k) {
                e.add(&p, format!("key '{k}' {why}"));
            } else if k.starts_with(RESERVED_PREFIX) {
                e.add(
                    &p,
                    format!("keys under {RESERVED_PREFIX} are reserved for the controller"),
                );
            }
            if let Err(why) = label_value(v) {
                e.add(&p, format!("value '{v}' {why}"));
            }
        }
    }
    if let Some(annotations) = &spec.annotations {
        for (k, v) in annotations {
            let p = format!("spec.annotations[{k}]");
            if let Err(why) = qualified_name(k) {
                e.add(&p, format!("key '{k}' {why}"));
            } else if k.starts_with(RESERVED_PREFIX) {
                e.add(
                    &p,
                    format!("keys under {RESERVED_PREFIX} are reserved for the controller"),
                );
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
                if spec.runtime.starts_with("nodejs") {
                    match serde_json::from_str::<serde_json::Value>(deps) {
                        Ok(serde_json::Value::Object(_)) => {}
                        Ok(_) => e.add(
                            "spec.source.inline.dependencies",
                            "must be a JSON object (a package.json)",
                        ),
                        Err(err) => e.add(
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
            if url.is_empty() {
                e.add("spec.source.gitRepository.url", "is required");
            } else if !["https://", "http://", "git://", "ssh://", "git@"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                e.add(
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
            }
            if let Some(auth) = &git.auth {
                if auth.type_ != "basic" && auth.type_ != "key" {
                    e.add(
                        "spec.source.gitRepository.auth.type",
                        format!("'{}' must be basic or key", auth.type_),
                    );
                }
                if let Err(why) = dns1123_subdomain(&auth.secret_name) {
                    e.add(
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
        if let Err(why) = env_var_name(&var.name) {
            e.add(format!("{p}.name"), format!("'{}' {why}", var.name));
        } else if RESERVED_ENV.contains(&var.name.as_str()) {
            e.add(
                format!("{p}.name"),
                format!("{} is reserved (reserved: {})", var.name, RESERVED_ENV.join(", ")),
            );
        } else if !seen.insert(var.name.as_str()) {
            e.add(format!("{p}.name"), format!("{} is set twice", var.name));
        }
        if let Some(from) = &var.value_from {
            if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
                e.add(format!("{p}.valueFrom"), "cannot be used together with value");
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
                e.add(
                    format!("{p}.valueFrom"),
                    "set exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
                );
            }
        }
    }
}

fn validate_resources(
    path: &str,
    r: &ResourceRequirements,
    e: &mut Errors,
    profiles: &[super::resources::Profile],
    known: impl Fn(&str) -> bool,
) {
    match (&r.profile, &r.resources) {
        (Some(_), Some(_)) => e.add(path, "set profile or resources, not both"),
        (Some(p), None) => {
            if !known(p) {
                e.add(
                    format!("{path}.profile"),
                    format!("'{p}' is not a profile; use one of: {}", profile_names(profiles)),
                );
            }
        }
        (None, Some(res)) => {
            let mut parsed = |kind: &str,
                              m: &Option<
                std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >| {
                let mut out = std::collections::BTreeMap::new();
                for (k, q) in m.iter().flatten() {
                    let field = format!("{path}.resources.{kind}.{k}");
                    if k != "cpu" && k != "memory" && k != "ephemeral-storage" {
                        e.add(&field, "only cpu, memory and ephemeral-storage may be set");
                    }
                    match parse_quantity(&q.0) {
                        Some(v) if v >= 0.0 => {
                            out.insert(k.clone(), v);
                        }
                        Some(_) => e.add(&field, format!("'{}' is negative", q.0)),
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
                        e.add(
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
        }
        (None, None) => {}
    }
}

/// A DNS-1035 label: what Service names must be.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters long".into());
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_lowercase()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err("must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters long".into());
    }
    for part in s.split('.') {
        let b = part.as_bytes();
        if b.is_empty()
            || !b[0].is_ascii_alphanumeric()
            || !b[b.len() - 1].is_ascii_alphanumeric()
            || !b
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into());
        }
    }
    Ok(())
}

/// An environment variable name as Kubernetes accepts it.
pub fn env_var_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.is_empty()
        || b[0].is_ascii_digit()
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' || *c == b'.')
    {
        return Err(
            "is not a valid environment variable name: letters, digits, '_', '-' and '.', not starting with a digit"
                .into(),
        );
    }
    Ok(())
}

fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label or annotation key: `[prefix/]name`.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if dns1123_subdomain(p).is_err() {
            return Err("has a prefix that is not a DNS-1123 subdomain".into());
        }
    }
    if !name_part(name) {
        return Err("must be [prefix/]name, the name 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// A label value.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || name_part(s) {
        Ok(())
    } else {
        Err("must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ResourceRequirements as K8sRes, SecretKeySelector};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn valid() -> FunctionSpec {
        FunctionSpec {
            runtime: "nodejs20".into(),
            source: Source {
                inline: Some(InlineSource {
                    source: "module.exports = { main: () => 'hi' }".into(),
                    dependencies: Some(r#"{"name":"fn","dependencies":{}}"#.into()),
                }),
                git_repository: None,
            },
            ..Default::default()
        }
    }

    fn errors(name: &str, spec: &FunctionSpec) -> Vec<String> {
        match validate(Some(name), spec) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn one(name: &str, spec: &FunctionSpec) -> String {
        let e = errors(name, spec);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    }

    #[test]
    fn a_valid_function_passes() {
        assert_eq!(errors("hello", &valid()), Vec::<String>::new());
        let mut s = valid();
        crate::defaults::apply_defaults(&mut s);
        assert_eq!(errors("hello", &s), Vec::<String>::new());
    }

    #[test]
    fn name_and_runtime() {
        assert!(one("Hello", &valid()).starts_with("metadata.name: 'Hello' must be a DNS-1035 label"));
        assert!(one("1abc", &valid()).starts_with("metadata.name:"));
        assert!(one(&"a".repeat(64), &valid()).starts_with("metadata.name:"));
        let mut s = valid();
        s.runtime = "nodejs12".into();
        assert_eq!(
            one("f", &s),
            "spec.runtime: 'nodejs12' is not a runtime; use one of: nodejs20, nodejs22, nodejs24, python312"
        );
        let mut s = valid();
        s.runtime_image_override = Some("Not A Ref".into());
        assert!(one("f", &s).starts_with("spec.runtimeImageOverride: 'Not A Ref' is not an image reference"));
        for local in ["oci:x", "docker-archive:x", "docker-daemon:node", "oci:/etc:passwd"] {
            s.runtime_image_override = Some(local.into());
            assert!(one("f", &s).contains("names a local image"), "{local}");
        }
        s.runtime_image_override = Some("docker://reg.example.com/node:24".into());
        assert!(errors("f", &s).is_empty());
    }

    /// A spec with these dependencies, for `runtime`.
    fn deps(runtime: &str, deps: &str) -> FunctionSpec {
        let mut s = valid();
        s.runtime = runtime.into();
        if runtime.starts_with("python") {
            s.source.inline.as_mut().unwrap().source = "def main(event, context):\n    return 'hi'\n".into();
        }
        s.source.inline.as_mut().unwrap().dependencies = Some(deps.into());
        s
    }

    /// The one error of a spec whose dependencies the builder refuses: at the dependencies
    /// field, with the builder's own message (which names the file and the offending entry).
    fn refused(runtime: &str, dependencies: &str, says: &str) {
        let e = one("f", &deps(runtime, dependencies));
        let message = e
            .strip_prefix("spec.source.inline.dependencies: ")
            .unwrap_or_else(|| panic!("not at the dependencies field: {e}"));
        assert!(message.contains(says), "{dependencies:?}: {e}");
        let inline = InlineSource {
            source: "x".into(),
            dependencies: Some(dependencies.into()),
        };
        let builder = crate::build_job::inline_plan(runtime, &inline).unwrap_err();
        assert_eq!(message, builder.to_string(), "the builder's words");
    }

    #[test]
    fn dependencies_the_builder_would_refuse_are_refused_at_apply() {
        refused(
            "nodejs20",
            r#"{"dependencies":{"x":"file:../../etc"}}"#,
            "\"x\": file:../../etc is outside the function's directory",
        );
        // Every dependency section, and the other ways out of the function's directory.
        refused(
            "nodejs20",
            r#"{"peerDependencies":{"x":"file:../../x"}}"#,
            "file:../../x is outside",
        );
        refused(
            "nodejs20",
            r#"{"dependencies":{"x":"git+file:///tmp/repo"}}"#,
            "git+file:///tmp/repo",
        );
        refused("nodejs20", r#"{"devDependencies":{"x":"link:/etc"}}"#, "link:/etc");
        refused("python312", "-c /abs/path\n", "-c /abs/path");
        refused("python312", "--constraint /abs/path\n", "--constraint /abs/path");
        refused(
            "python312",
            "x @ file:///etc/passwd\n",
            "package /etc/passwd is outside",
        );
        refused(
            "nodejs22",
            r#"{"dependencies":{"x":"file:vendor/x.tgz"}}"#,
            "vendor/x.tgz, which is not in the function's directory",
        );
        refused(
            "python312",
            "requests==2.32.3\n-r /etc/passwd\n",
            "requirements.txt line 2: -r /etc/passwd is outside the function's directory",
        );
        refused(
            "python312",
            "-c ../constraints.txt\n",
            "-c ../constraints.txt is outside",
        );
        refused(
            "python312",
            "-r https://example.com/r.txt\n",
            "line 1: -r https://example.com/r.txt",
        );
        // Ones that install normally pass.
        for (runtime, d) in [
            ("nodejs20", r#"{"dependencies":{"left-pad":"1.3.0"}}"#),
            ("nodejs20", r#"{"name":"x"}"#),
            ("python312", "requests==2.32.3\nsix\n"),
            ("python312", "# no packages\n"),
        ] {
            assert_eq!(errors("f", &deps(runtime, d)), Vec::<String>::new(), "{d}");
        }
    }

    #[test]
    fn sources() {
        let mut s = valid();
        s.source.git_repository = Some(GitRepositorySource {
            url: "https://x/y.git".into(),
            ..Default::default()
        });
        assert_eq!(
            one("f", &s),
            "spec.source: set exactly one of inline and gitRepository, not both"
        );
        s.source = Source::default();
        assert_eq!(one("f", &s), "spec.source: set exactly one of inline and gitRepository");
        let mut s = valid();
        s.source.inline.as_mut().unwrap().source = " ".into();
        assert_eq!(
            one("f", &s),
            "spec.source.inline.source: is empty; put the handler's code here"
        );
        let mut s = valid();
        s.source.inline.as_mut().unwrap().dependencies = Some("[1]".into());
        assert_eq!(
            one("f", &s),
            "spec.source.inline.dependencies: must be a JSON object (a package.json)"
        );
        s.source.inline.as_mut().unwrap().dependencies = Some("{oops".into());
        assert!(one("f", &s).starts_with("spec.source.inline.dependencies: is not valid JSON"));
        // Python's requirements.txt is not JSON.
        s.runtime = "python312".into();
        s.source.inline.as_mut().unwrap().dependencies = Some("requests==2.32.0\n".into());
        assert!(errors("f", &s).is_empty());
        let mut s = valid();
        s.source = Source {
            inline: None,
            git_repository: Some(GitRepositorySource {
                url: "ftp://x".into(),
                base_dir: Some("/".into()),
                reference: None,
                auth: Some(RepositoryAuth {
                    type_: "token".into(),
                    secret_name: "Bad_Name".into(),
                }),
            }),
        };
        let e = errors("f", &s);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("spec.source.gitRepository.url: 'ftp://x' must start with"));
        assert!(e[1].starts_with("spec.source.gitRepository.reference: is required"));
        assert_eq!(
            e[2],
            "spec.source.gitRepository.auth.type: 'token' must be basic or key"
        );
        assert!(e[3].starts_with("spec.source.gitRepository.auth.secretName: 'Bad_Name'"));
    }

    #[test]
    fn env() {
        let mut s = valid();
        s.env = Some(vec![
            EnvVar {
                name: "OK".into(),
                value: Some("1".into()),
                ..Default::default()
            },
            EnvVar {
                name: "FUNC_PORT".into(),
                value: Some("1".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            one("f", &s),
            "spec.env[1].name: FUNC_PORT is reserved (reserved: FUNC_RUNTIME, FUNC_HANDLER, FUNC_PORT, MOD_NAME, NODE_PATH, PYTHONPATH)"
        );
        s.env = Some(vec![
            EnvVar {
                name: "1X".into(),
                ..Default::default()
            },
            EnvVar {
                name: "A".into(),
                ..Default::default()
            },
            EnvVar {
                name: "A".into(),
                ..Default::default()
            },
            EnvVar {
                name: "B".into(),
                value: Some("v".into()),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "s".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ]);
        let e = errors("f", &s);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("spec.env[0].name: '1X' is not a valid environment variable name"));
        assert_eq!(e[1], "spec.env[2].name: A is set twice");
        assert_eq!(e[2], "spec.env[3].valueFrom: cannot be used together with value");
    }

    fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> K8sRes {
        let m = |v: &[(&str, &str)]| {
            Some(
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        K8sRes {
            requests: m(req),
            limits: m(lim),
            ..Default::default()
        }
    }

    #[test]
    fn resources() {
        let mut s = valid();
        s.resource_configuration = Some(ResourceConfiguration {
            function: Some(ResourceRequirements {
                profile: None,
                resources: Some(res(
                    &[("cpu", "500m"), ("memory", "1Gi")],
                    &[("cpu", "0.25"), ("memory", "1024Mi")],
                )),
            }),
            build: Some(ResourceRequirements {
                profile: Some("turbo".into()),
                resources: None,
            }),
        });
        let e = errors("f", &s);
        assert_eq!(
            e,
            [
                "spec.resourceConfiguration.function.resources.requests.cpu: 500m is more than the limit 0.25",
                "spec.resourceConfiguration.build.profile: 'turbo' is not a profile; use one of: local-dev, slow, normal, fast"
            ]
        );
        s.resource_configuration = Some(ResourceConfiguration {
            function: Some(ResourceRequirements {
                profile: Some("S".into()),
                resources: Some(res(&[], &[])),
            }),
            build: Some(ResourceRequirements {
                profile: None,
                resources: Some(res(&[("cpu", "lots")], &[("gpu", "1")])),
            }),
        });
        let e = errors("f", &s);
        assert_eq!(
            e,
            [
                "spec.resourceConfiguration.function: set profile or resources, not both",
                "spec.resourceConfiguration.build.resources.requests.cpu: 'lots' is not a quantity (e.g. 100m, 0.5, 128Mi, 1Gi)",
                "spec.resourceConfiguration.build.resources.limits.gpu: only cpu, memory and ephemeral-storage may be set",
            ]
        );
    }

    #[test]
    fn replicas_and_scaling() {
        let mut s = valid();
        s.replicas = Some(-1);
        assert_eq!(one("f", &s), "spec.replicas: -1 is negative; use 0 or more");
        let mut s = valid();
        s.scale_config = Some(ScaleConfig {
            min_replicas: Some(3),
            max_replicas: Some(2),
        });
        assert_eq!(
            one("f", &s),
            "spec.scaleConfig.maxReplicas: 2 is less than minReplicas (3)"
        );
        s.scale_config = Some(ScaleConfig {
            min_replicas: Some(0),
            max_replicas: Some(2),
        });
        assert_eq!(one("f", &s), "spec.scaleConfig.minReplicas: 0 is less than 1");
    }

    #[test]
    fn secret_mounts() {
        let mut s = valid();
        let m = |n: &str, p: &str| SecretMount {
            secret_name: n.into(),
            mount_path: p.into(),
        };
        s.secret_mounts = Some(vec![
            m("a", "/etc/a"),
            m("b", "/etc/a/"),
            m("C", "rel"),
            m("d", "/tmp"),
            m("e", "/x/../y"),
        ]);
        let e = errors("f", &s);
        assert_eq!(e.len(), 5, "{e:?}");
        assert_eq!(
            e[0],
            "spec.secretMounts[1].mountPath: '/etc/a/' is used by another secret mount"
        );
        assert!(e[1].starts_with("spec.secretMounts[2].secretName: 'C' must be a DNS-1123 subdomain"));
        assert!(e[2].starts_with("spec.secretMounts[2].mountPath: 'rel' must be an absolute path"));
        assert!(e[3].starts_with("spec.secretMounts[3].mountPath: /tmp is the function's scratch directory"));
        assert!(e[4].starts_with("spec.secretMounts[4].mountPath: '/x/../y'"));
    }

    #[test]
    fn labels_and_annotations() {
        let mut s = valid();
        s.labels = Some(BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("serverless.kyma-project.io/function-name".to_string(), "x".to_string()),
            ("bad key!".to_string(), "v".to_string()),
            ("team".to_string(), "x".repeat(64)),
        ]));
        s.annotations = Some(BTreeMap::from([
            (
                "example.com/ok".to_string(),
                "anything at all, even long ones".repeat(5),
            ),
            ("serverless.kyma-project.io/x".to_string(), String::new()),
        ]));
        let e = errors("f", &s);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("spec.labels[bad key!]: key 'bad key!' must be [prefix/]name"));
        assert_eq!(
            e[1],
            "spec.labels[serverless.kyma-project.io/function-name]: keys under serverless.kyma-project.io/ are reserved for the controller"
        );
        assert!(e[2].starts_with("spec.labels[team]: value 'xxxx"));
        assert_eq!(
            e[3],
            "spec.annotations[serverless.kyma-project.io/x]: keys under serverless.kyma-project.io/ are reserved for the controller"
        );

        // Annotations that would take the Pod's confinement away are refused; profiles are not.
        let annotated = |k: &str, v: &str| {
            let mut s = valid();
            s.annotations = Some(BTreeMap::from([(k.to_string(), v.to_string())]));
            errors("f", &s)
        };
        for (k, v) in [
            ("container.apparmor.security.beta.kubernetes.io/function", "unconfined"),
            ("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
            ("container.seccomp.security.alpha.kubernetes.io/function", "unconfined"),
        ] {
            let e = annotated(k, v);
            assert_eq!(e.len(), 1, "{k}: {e:?}");
            assert!(e[0].contains("without its AppArmor or seccomp profile"), "{e:?}");
        }
        assert!(annotated(
            "container.apparmor.security.beta.kubernetes.io/function",
            "runtime/default"
        )
        .is_empty());
        assert!(annotated("seccomp.security.alpha.kubernetes.io/pod", "localhost/strict.json").is_empty());
    }

    #[test]
    fn an_inline_source_that_no_config_map_can_hold_is_refused() {
        let mut s = valid();
        s.source.inline.as_mut().unwrap().source = format!("// {}\n", "x".repeat(1024 * 1024));
        let e = one("f", &s);
        assert!(
            e.starts_with("spec.source.inline: source and dependencies are 10486"),
            "{e}"
        );
        assert!(e.contains("holds at most 1032192"), "{e}");
        assert!(e.contains("use a git source"), "{e}");
    }

    #[test]
    fn name_rules() {
        assert!(dns1035_label("a-1").is_ok());
        assert!(dns1035_label("a-").is_err());
        assert!(dns1123_subdomain("a.b-c").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(qualified_name("example.com/a_b.c").is_ok());
        assert!(qualified_name("/a").is_err());
        assert!(qualified_name("a/").is_err());
        assert!(env_var_name("my.var-1").is_ok());
        assert!(label_value("").is_ok());
    }
}
