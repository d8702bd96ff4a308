//! One rejected (or admitted) Function per case.

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
        "spec.source.inline.dependencies: deps should start with '{' and end with '}'"
    );
    s.source.inline.as_mut().unwrap().dependencies = Some("{oops}".into());
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
        "spec.env[1].name: FUNC_PORT is reserved (reserved: FUNC_RUNTIME, FUNC_HANDLER, FUNC_PORT, FUNC_HANDLER_SOURCE, FUNC_HANDLER_DEPENDENCIES, MOD_NAME, NODE_PATH, PYTHONPATH)"
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
            "spec.resourceConfiguration.build.resources.limits.gpu: is not a resource name: cpu, memory, ephemeral-storage, hugepages-<size> or a prefixed name such as nvidia.com/gpu",
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
