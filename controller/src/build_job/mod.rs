//! The build Job, split by what each step may hold.
//!
//! A dependency installer (npm, pip) runs the Function author's code: install scripts, setup.py.
//! So the step that runs it never holds the registry's push credentials, and the steps that
//! hold them never run it. For a Function whose dependency file names packages the Pod has:
//!
//! | container          | registry Secret | package Secret | /tmp               | /handoff   | runs an installer |
//! |--------------------|-----------------|----------------|--------------------|------------|-------------------|
//! | `prepare` (init)   | yes             | no             | `tmp`              | read-write | no                |
//! | `download` (init)  | no              | yes            | `download-tmp`     | read-write | downloads only    |
//! | `install` (init)   | no              | no             | `install-tmp` (own)| read-write | yes               |
//! | `build`            | yes             | no             | `tmp`              | read-only  | no                |
//!
//! `prepare` resolves the base image and the dependency caches (into `tmp`) and, when an install
//! is needed, writes `/handoff/request.json`; `download` (only when the namespace has a
//! package-registry Secret) fetches the packages with its token, running none of their code;
//! `install` installs (the scripts) into `/handoff`, with no credential at all; `build` takes
//! the layer `install` left and pushes. `install` never sees `tmp`, which holds the caches the
//! push step trusts. A Function whose dependencies name no package needs no installer: one
//! `build` container, without the package Secret.
//!
//! Whether a Function names packages is decided by the builder's own dependency planner, run on
//! the inline source in memory, so the controller and the builder agree. A git source's
//! dependencies are not in memory: its first build is `fetch` and `build` alone, `build` taking
//! the dependency layer from a cache or exiting with `EXIT_INSTALL_NEEDED` (no installer runs in
//! it); then, and for the Function's later commits, the split Pod after `fetch`.

use super::desired::{
    build_resources, docker_config_volume, env, job_name, labels, meta, mount, push_reference,
    restricted_container_security, restricted_pod_security, volume, ANNOTATION_IMAGE, DOCKER_CONFIG_DIR,
    LABEL_BUILD_ATTEMPT, LABEL_IMAGE_TAG, LABEL_RESOURCE, PACKAGE_REGISTRY_DIR, SOURCE_DIR,
};
use super::settings::{Settings, CACHE_KEY_SECRET_KEY};
use super::types::{Function, InlineSource};
use fnbuild::function::dependencies::{self, DependencyError, Plan};
use fnbuild::function::runtime::Runtimes;
use fnbuild::function::source::{FunctionSource, SourceEntry};
use fnbuild::oci::layer::{Content, EntryKind};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, LocalObjectReference, PodSpec,
    PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the build Pod's steps hand the install request and the installed packages on.
pub const HANDOFF_DIR: &str = "/handoff";
/// The build container: the Job's status and the image digest are read from it.
pub const BUILD_CONTAINER: &str = "build";
/// The init container that resolves the base image and the caches (registry Secret, no installer).
pub const PREPARE_CONTAINER: &str = "prepare";
/// The init container that runs the installer, and so the install scripts (no registry
/// Secret; no package Secret either when there is a `download` step).
pub const INSTALL_CONTAINER: &str = "install";
/// With a package-registry Secret: the init container that downloads with it, running no
/// package's code (`npm ci --ignore-scripts`, `pip download` of wheels).
pub const DOWNLOAD_CONTAINER: &str = "download";
/// Where the steps that push mount the cache key Secret.
pub const CACHE_KEY_DIR: &str = "/cache-key";

/// The builder's base image option: `--base IMAGE` (fnbuild's server laid over it), or
/// `--runtime-image IMAGE` for a Function's `runtimeImageOverride` (the image's own server runs,
/// as in Kyma).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseArg {
    Base(String),
    RuntimeImage(String),
}

impl BaseArg {
    pub fn args(&self) -> [String; 2] {
        match self {
            BaseArg::Base(i) => ["--base".into(), i.clone()],
            BaseArg::RuntimeImage(i) => ["--runtime-image".into(), i.clone()],
        }
    }
}

/// A Function from git, its reference resolved: the build Job's `fetch` step checks out this
/// commit, with the auth Secret only it mounts, into the `source` volume, and the later steps
/// see the function's directory there at /src (a subPath), as they see an inline source's
/// ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitBuild {
    pub url: String,
    pub commit: String,
    /// The function's directory in the repository, relative (`""`: its root).
    pub dir: String,
    /// The Secret with the credentials (Kyma's `auth.secretName`).
    pub auth_secret: Option<String>,
}

/// The init container that fetches a git source (the only step with the git credentials).
pub const FETCH_CONTAINER: &str = "fetch";
const GIT_DIR: &str = "/git";
const GIT_AUTH_DIR: &str = "/git-auth";

impl GitBuild {
    /// `baseDir` as the fetch step and a subPath take it: relative, no `./`, no trailing `/`.
    pub fn dir_of(base_dir: Option<&str>) -> String {
        let d = base_dir.unwrap_or("").trim().trim_matches('/');
        let d = d.strip_prefix("./").unwrap_or(d);
        if d == "." {
            String::new()
        } else {
            d.to_string()
        }
    }
}

/// What a build needs besides the Function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    pub tag: String,
    pub attempt: u32,
    /// The builder's base image option, when not the runtime's default.
    pub base: Option<BaseArg>,
    /// The package-registry Secret has `.npmrc` / `pip.conf`.
    pub npmrc: bool,
    pub pip_conf: bool,
    /// The cache key Secret is there (with its `key`): the registry cache may be used.
    pub cache_key: bool,
    /// The Function's source is this commit of a repository.
    pub git: Option<GitBuild>,
    /// The split Pod, with an install step (see the module's table): for an inline source, when
    /// [`names_packages`]; for a git source, once a build found that its dependencies need one.
    pub install_step: bool,
    /// The platforms to build for: two or more make an index (`--platform A,B`); none or one,
    /// the builder's own platform.
    pub platforms: Vec<String>,
}

/// The builder's dependency plan for an inline source, read from memory exactly as the builder
/// reads the mounted ConfigMap: `Ok(Some(_))` when an installer will run, `Ok(None)` when the
/// dependency file is missing or names no package, `Err` when the builder would refuse it.
/// An unknown runtime has no plan (validation reports the runtime).
pub fn inline_plan(runtime: &str, inline: &InlineSource) -> Result<Option<Plan>, DependencyError> {
    let Ok(runtime) = Runtimes::Embedded.load(runtime) else {
        return Ok(None);
    };
    let file = |path: &str, text: &str| SourceEntry {
        path: path.to_string(),
        kind: EntryKind::File {
            content: Content::Bytes(text.as_bytes().to_vec().into()),
            executable: false,
        },
    };
    let mut entries = vec![file(&runtime.spec.handler_file, &inline.source)];
    // As `desired::config_map`: an empty dependencies field is no file at all.
    if let Some(d) = inline.dependencies.as_deref().filter(|d| !d.is_empty()) {
        entries.push(file(&runtime.spec.dependency_file, d));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let source = FunctionSource {
        root: PathBuf::from(SOURCE_DIR),
        entries,
        dependency_file: None,
    };
    dependencies::plan(&source, &runtime)
}

/// Whether the build may run an installer. Only an inline source whose dependencies the planner
/// reads as naming no package runs none; anything else (packages, a file the builder refuses,
/// a source the controller cannot read) gets the split Pod.
pub fn names_packages(f: &Function) -> bool {
    match &f.spec.source.inline {
        Some(inline) => !matches!(inline_plan(&f.spec.runtime, inline), Ok(None)),
        None => true,
    }
}

fn builder_container(
    s: &Settings,
    name: &str,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
    f: &Function,
) -> Container {
    let (resources, _) = build_resources(f, s);
    Container {
        name: name.into(),
        image: Some(s.builder_image.clone()),
        command: Some(vec![s.builder_command.clone()]),
        args: Some(args),
        env: Some(env),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// HOME, the XDG cache and TMPDIR in the container's own /tmp (the root filesystem is read-only).
fn scratch_env() -> Vec<EnvVar> {
    vec![
        env("HOME", "/tmp"),
        env("XDG_CACHE_HOME", "/tmp/.cache"),
        env("TMPDIR", "/tmp"),
    ]
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..volume(name)
    }
}

/// The build Job: `fnbuild build /src --runtime R --push PUSH/NS-FN:TAG --digest-file
/// /dev/termination-log --json`, the ConfigMap at /src, DOCKER_CONFIG from the registry Secret,
/// non-root with a read-only root filesystem and emptyDirs as its only writable directories;
/// with the `prepare` and `install` init containers of the module's table when the Function
/// names packages. When a step fails before writing its message, the kubelet puts its last log
/// lines into the termination message (FallbackToLogsOnError).
pub fn build_job(f: &Function, s: &Settings, b: &BuildInputs) -> Job {
    let mut job_labels = labels(f);
    job_labels.insert(LABEL_IMAGE_TAG.into(), b.tag.clone());
    job_labels.insert(LABEL_BUILD_ATTEMPT.into(), b.attempt.to_string());
    let mut pod_labels = job_labels.clone();
    pod_labels.insert(LABEL_RESOURCE.into(), "build".into());
    let push = push_reference(f, s, &b.tag);
    let split = b.install_step;

    // What `prepare` and `build` both pass: where from, where to, and the registry's options.
    let mut options: Vec<String> = Vec::new();
    if let Some(base) = &b.base {
        options.extend(base.args());
    }
    // Every listed host: besides the push registry (and the cache repository there) and the
    // base image's registry, a build follows token realms and blob redirects the controller
    // cannot foresee.
    for host in &s.insecure_registries {
        options.extend(["--insecure-registry".into(), host.clone()]);
    }
    // The registry cache only with the key that signs its entries.
    let cache = s.dependency_cache && b.cache_key;
    if cache {
        options.extend([
            "--cache-repo".into(),
            s.dependency_cache_repo(&f.namespace().unwrap_or_default()),
            "--cache-key-file".into(),
            format!("{CACHE_KEY_DIR}/{CACHE_KEY_SECRET_KEY}"),
        ]);
    }
    let build_args = |report: bool| {
        let mut a: Vec<String> = vec![
            "build".into(),
            SOURCE_DIR.into(),
            "--runtime".into(),
            f.spec.runtime.clone(),
            "--push".into(),
            push.clone(),
        ];
        if report {
            a.extend(["--digest-file".into(), "/dev/termination-log".into(), "--json".into()]);
        }
        if b.platforms.len() > 1 {
            a.extend(["--platform".into(), b.platforms.join(",")]);
        }
        if let Some(g) = &b.git {
            a.extend([
                "--source-url".into(),
                g.url.clone(),
                "--revision".into(),
                g.commit.clone(),
            ]);
        }
        a.extend(options.iter().cloned());
        a
    };
    let registry_env = || {
        let mut e = vec![env("DOCKER_CONFIG", DOCKER_CONFIG_DIR)];
        e.extend(scratch_env());
        e
    };
    // A git source: the function's directory in the fetched checkout.
    let source_mount = || VolumeMount {
        sub_path: b
            .git
            .as_ref()
            .map(|g| format!("checkout/{}", g.dir).trim_end_matches('/').to_string()),
        ..mount("source", SOURCE_DIR, true)
    };
    let registry_mounts = || {
        let mut m = vec![
            source_mount(),
            mount("registry-config", DOCKER_CONFIG_DIR, true),
            mount("tmp", "/tmp", false),
        ];
        if cache {
            m.push(mount("cache-key", CACHE_KEY_DIR, true));
        }
        m
    };

    let source_volume = match &b.git {
        Some(_) => empty_dir("source"),
        None => Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: f.name_any(),
                ..Default::default()
            }),
            ..volume("source")
        },
    };
    let mut volumes = vec![
        source_volume,
        docker_config_volume("registry-config", &s.registry_secret),
        empty_dir("tmp"),
    ];
    if cache {
        volumes.push(Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(s.cache_key_secret.clone()),
                items: Some(vec![KeyToPath {
                    key: CACHE_KEY_SECRET_KEY.into(),
                    path: CACHE_KEY_SECRET_KEY.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..volume("cache-key")
        });
    }

    let mut init_containers = Vec::new();
    if let Some(g) = &b.git {
        let mut args: Vec<String> = vec![
            "fetch-source".into(),
            "--git-url".into(),
            g.url.clone(),
            "--git-ref".into(),
            g.commit.clone(),
            "--git-dir".into(),
            g.dir.clone(),
        ];
        let mut mounts = vec![mount("source", GIT_DIR, false), mount("tmp", "/tmp", false)];
        if let Some(secret) = &g.auth_secret {
            args.extend(["--git-auth".into(), GIT_AUTH_DIR.into()]);
            mounts.push(mount("git-auth", GIT_AUTH_DIR, true));
            volumes.push(Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..Default::default()
                }),
                ..volume("git-auth")
            });
        }
        args.push(GIT_DIR.into());
        init_containers.push(builder_container(s, FETCH_CONTAINER, args, scratch_env(), mounts, f));
    }
    let container = if split {
        volumes.extend([empty_dir("handoff"), empty_dir("install-tmp")]);

        let mut prepare_args = build_args(false);
        prepare_args.extend(["--prepare-dependencies".into(), HANDOFF_DIR.into()]);
        let mut prepare_mounts = registry_mounts();
        prepare_mounts.push(mount("handoff", HANDOFF_DIR, false));
        init_containers.push(builder_container(
            s,
            PREPARE_CONTAINER,
            prepare_args,
            registry_env(),
            prepare_mounts,
            f,
        ));

        let install_args = |step: &str| -> Vec<String> {
            vec![
                "install-dependencies".into(),
                SOURCE_DIR.into(),
                "--runtime".into(),
                f.spec.runtime.clone(),
                "--handoff".into(),
                HANDOFF_DIR.into(),
                "--step".into(),
                step.into(),
            ]
        };
        let install_mounts = |tmp: &str| {
            vec![
                source_mount(),
                mount("handoff", HANDOFF_DIR, false),
                mount(tmp, "/tmp", false),
            ]
        };
        if b.npmrc || b.pip_conf {
            // The package registry's token serves the download only: the scripts run in the
            // next step, which never has it.
            let mut download_args = install_args("download");
            if b.npmrc {
                download_args.extend(["--npmrc".into(), format!("{PACKAGE_REGISTRY_DIR}/.npmrc")]);
            }
            if b.pip_conf {
                download_args.extend(["--pip-conf".into(), format!("{PACKAGE_REGISTRY_DIR}/pip.conf")]);
            }
            volumes.push(Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some(s.package_registry_secret.clone()),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..volume("package-registry-config")
            });
            volumes.push(empty_dir("download-tmp"));
            let mut download_mounts = install_mounts("download-tmp");
            download_mounts.push(mount("package-registry-config", PACKAGE_REGISTRY_DIR, true));
            init_containers.push(builder_container(
                s,
                DOWNLOAD_CONTAINER,
                download_args,
                scratch_env(),
                download_mounts,
                f,
            ));
            init_containers.push(builder_container(
                s,
                INSTALL_CONTAINER,
                install_args("scripts"),
                scratch_env(),
                install_mounts("install-tmp"),
                f,
            ));
        } else {
            init_containers.push(builder_container(
                s,
                INSTALL_CONTAINER,
                install_args("all"),
                scratch_env(),
                install_mounts("install-tmp"),
                f,
            ));
        }

        let mut args = build_args(true);
        args.extend(["--installed-dependencies".into(), HANDOFF_DIR.into()]);
        let mut mounts = registry_mounts();
        mounts.push(mount("handoff", HANDOFF_DIR, true));
        builder_container(s, BUILD_CONTAINER, args, registry_env(), mounts, f)
    } else if b.git.is_some() {
        // A git source's dependencies are seen only once fetched: the build takes them from a
        // cache or, with an empty handoff, fails with EXIT_INSTALL_NEEDED (running no installer),
        // and the controller builds again with the install step.
        volumes.push(empty_dir("handoff"));
        let mut args = build_args(true);
        args.extend(["--installed-dependencies".into(), HANDOFF_DIR.into()]);
        let mut mounts = registry_mounts();
        mounts.push(mount("handoff", HANDOFF_DIR, true));
        builder_container(s, BUILD_CONTAINER, args, registry_env(), mounts, f)
    } else {
        builder_container(
            s,
            BUILD_CONTAINER,
            build_args(true),
            registry_env(),
            registry_mounts(),
            f,
        )
    };

    let mut metadata = meta(f, job_name(f, &b.tag, b.attempt), job_labels);
    metadata.annotations = Some(BTreeMap::from([(ANNOTATION_IMAGE.to_string(), push)]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(s.build_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // No Istio sidecar, as in Kyma: in an injected namespace the sidecar would
                    // outlive the build container and the Job would never complete.
                    annotations: Some(BTreeMap::from([(
                        "sidecar.istio.io/inject".to_string(),
                        "false".to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // Off the node's network unless asked: with it, the install step's scripts
                    // would reach whatever listens on the node.
                    host_network: s.build_host_network.then_some(true),
                    // The builder image may live in the same private registry.
                    image_pull_secrets: Some(vec![LocalObjectReference {
                        name: s.registry_secret.clone(),
                    }]),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security()),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
