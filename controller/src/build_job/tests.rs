//! The build Job's shape, step by step.

use super::*;
use crate::desired::tests::{function, owned_by_function, settings};
use crate::desired::{image_tag, LABEL_FUNCTION_NAME};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;

fn with_packages(mut f: Function) -> Function {
    f.spec.source.inline.as_mut().unwrap().dependencies =
        Some(r#"{"name":"hello","dependencies":{"left-pad":"1.3.0"}}"#.into());
    f
}

fn inputs(f: &Function) -> BuildInputs {
    BuildInputs {
        tag: image_tag(f, "node:20-slim", None, &[]),
        attempt: 2,
        base: Some(BaseArg::Base("reg.local/node:20".into())),
        npmrc: true,
        pip_conf: false,
        cache_key: true,
        git: None,
        install_step: names_packages(f),
        platforms: Vec::new(),
    }
}

fn pod_of(job: &Job) -> PodSpec {
    job.spec.clone().unwrap().template.spec.unwrap()
}

fn envs(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect()
}

fn mounts(c: &Container) -> Vec<(&str, &str, Option<bool>)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect()
}

fn restricted(c: &Container) {
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
    assert_eq!(sc.run_as_user, Some(1000), "{}", c.name);
    assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
    assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.capabilities.as_ref().unwrap().add, None);
    assert_eq!(c.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
    assert_eq!(c.image.as_deref(), Some("reg.local/fnbuild:1"));
    assert_eq!(c.command, Some(vec!["fnbuild".to_string()]));
}

const SCRATCH: [(&str, &str); 3] = [("HOME", "/tmp"), ("XDG_CACHE_HOME", "/tmp/.cache"), ("TMPDIR", "/tmp")];

fn registry_env() -> Vec<(String, String)> {
    [("DOCKER_CONFIG", "/docker-config")]
        .iter()
        .chain(SCRATCH.iter())
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn job_fields() {
    let f = function();
    let s = settings();
    let b = inputs(&f);
    let tag = b.tag.clone();
    let job = build_job(&f, &s, &b);
    let name = job.metadata.name.clone().unwrap();
    assert_eq!(name, format!("hello-build-{}-2", &tag[..10]));
    owned_by_function(&job.metadata);
    let l = job.metadata.labels.as_ref().unwrap();
    assert_eq!(l[LABEL_IMAGE_TAG], tag);
    assert_eq!(l[LABEL_BUILD_ATTEMPT], "2");
    let push = format!("registry.push:5000/ns1.hello:{tag}");
    assert_eq!(job.metadata.annotations.as_ref().unwrap()[ANNOTATION_IMAGE], push);

    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    let tmpl = spec.template;
    let tm = tmpl.metadata.unwrap();
    // Else, in an Istio-injected namespace, the sidecar keeps the Job from completing.
    assert_eq!(tm.annotations.unwrap()["sidecar.istio.io/inject"], "false");
    let pl = tm.labels.unwrap();
    assert_eq!(pl[LABEL_FUNCTION_NAME], "hello");
    assert_eq!(pl[LABEL_RESOURCE], "build");
    let pod = tmpl.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.host_network, None, "off the node's network by default");
    assert_eq!(
        pod.image_pull_secrets.as_ref().unwrap()[0].name,
        "serverless-registry-config-default"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(1000));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");

    // {"name":"hello"} names no package: no installer runs, so one container, and it gets
    // no package Secret (nor its flag) even though the namespace has one.
    assert!(!names_packages(&f));
    assert_eq!(pod.init_containers, None);
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "build");
    restricted(c);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "build",
            "/src",
            "--runtime",
            "nodejs20",
            "--push",
            push.as_str(),
            "--digest-file",
            "/dev/termination-log",
            "--json",
            "--base",
            "reg.local/node:20",
            "--insecure-registry",
            "registry.push:5000",
            "--cache-repo",
            "registry.push:5000/fnbuild-cache/ns1",
            "--cache-key-file",
            "/cache-key/key",
        ]
    );
    assert_eq!(envs(c), registry_env());
    let r = c.resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("250m".into()));
    assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("192Mi".into()));
    assert_eq!(r.limits.as_ref().unwrap()["cpu"], Quantity("1".into()));
    assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("512Mi".into()));
    assert_eq!(
        mounts(c),
        [
            ("source", "/src", Some(true)),
            ("registry-config", "/docker-config", Some(true)),
            ("tmp", "/tmp", None),
            ("cache-key", "/cache-key", Some(true)),
        ]
    );
    let vols = serde_json::to_value(pod.volumes.unwrap()).unwrap();
    assert_eq!(
        vols,
        json!([
            {"name": "source", "configMap": {"name": "hello"}},
            {"name": "registry-config", "secret": {"secretName": "serverless-registry-config-default", "optional": true,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache-key", "secret": {"secretName": "fnbuild-dependency-cache-key", "items": [{"key": "key", "path": "key"}]}},
        ])
    );
    // No cache key Secret in the namespace: no registry cache (the builder wants its key).
    let b_nokey = BuildInputs {
        cache_key: false,
        ..b.clone()
    };
    let c = pod_of(&build_job(&f, &s, &b_nokey)).containers[0].clone();
    assert!(!c.args.as_ref().unwrap().iter().any(|a| a.starts_with("--cache")));
    assert!(!mounts(&c).iter().any(|m| m.0 == "cache-key"));

    // Without a base override, an insecure registry or the cache: none of their flags.
    let s2 = Settings {
        insecure_registries: Vec::new(),
        dependency_cache: false,
        ..settings()
    };
    let b2 = BuildInputs {
        attempt: 1,
        base: None,
        npmrc: false,
        ..b
    };
    let job = build_job(&f, &s2, &b2);
    assert_eq!(pod_of(&job).containers[0].args.as_ref().unwrap().len(), 9);
    assert_eq!(pod_of(&job).volumes.unwrap().len(), 3);

    // A runtimeImageOverride: the image's own server runs (`--runtime-image`, not `--base`).
    let image = "docker://reg.local/kyma-node:24";
    let b4 = BuildInputs {
        base: Some(BaseArg::RuntimeImage(image.into())),
        ..b2.clone()
    };
    let args = pod_of(&build_job(&f, &s2, &b4)).containers[0].args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--runtime-image", image]), "{args:?}");
    assert!(!args.iter().any(|a| a == "--base"), "{args:?}");

    // A single-node cluster with the registry on the node's loopback: the node's network.
    let s3 = Settings {
        build_host_network: true,
        ..settings()
    };
    let job = build_job(&f, &s3, &b2);
    assert_eq!(pod_of(&job).host_network, Some(true));
}

#[test]
fn a_function_with_packages_installs_apart_from_the_push_credentials() {
    let f = with_packages(function());
    assert!(names_packages(&f));
    let s = settings();
    let b = inputs(&f);
    let push = format!("registry.push:5000/ns1.hello:{}", b.tag);
    let job = build_job(&f, &s, &b);
    let pod = pod_of(&job);
    assert_eq!(pod.host_network, None);
    let init = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prepare", "download", "install"]);
    assert_eq!(pod.containers.len(), 1);
    let (prepare, download, install, build) = (&init[0], &init[1], &init[2], &pod.containers[0]);
    for c in [prepare, download, install, build] {
        restricted(c);
        // Kubernetes reserves the larger of the init containers and the containers: the
        // same resources everywhere cost nothing.
        assert_eq!(c.resources, build.resources, "{}", c.name);
    }
    let options = [
        "--base",
        "reg.local/node:20",
        "--insecure-registry",
        "registry.push:5000",
        "--cache-repo",
        "registry.push:5000/fnbuild-cache/ns1",
        "--cache-key-file",
        "/cache-key/key",
    ];
    let mut want = vec!["build", "/src", "--runtime", "nodejs20", "--push", push.as_str()];
    want.extend(options);
    want.extend(["--prepare-dependencies", "/handoff"]);
    assert_eq!(prepare.args.as_ref().unwrap(), &want);
    assert_eq!(envs(prepare), registry_env());
    assert_eq!(
        mounts(prepare),
        [
            ("source", "/src", Some(true)),
            ("registry-config", "/docker-config", Some(true)),
            ("tmp", "/tmp", None),
            ("cache-key", "/cache-key", Some(true)),
            ("handoff", "/handoff", None),
        ]
    );

    // The download: the package Secret, its own /tmp, no registry credentials.
    let step_args = |step: &str| {
        let mut a = vec![
            "install-dependencies",
            "/src",
            "--runtime",
            "nodejs20",
            "--handoff",
            "/handoff",
            "--step",
        ];
        a.push(step);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let mut want_download = step_args("download");
    want_download.extend(["--npmrc".to_string(), "/package-registry/.npmrc".to_string()]);
    assert_eq!(download.args.as_ref().unwrap(), &want_download);
    assert_eq!(
        mounts(download),
        [
            ("source", "/src", Some(true)),
            ("handoff", "/handoff", None),
            ("download-tmp", "/tmp", None),
            ("package-registry-config", "/package-registry", Some(true)),
        ]
    );
    // The installer's step, which runs the scripts: no credentials of any kind.
    assert_eq!(install.args.as_ref().unwrap(), &step_args("scripts"));
    let install_env = envs(install);
    assert_eq!(install_env, SCRATCH.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(
        mounts(install),
        [
            ("source", "/src", Some(true)),
            ("handoff", "/handoff", None),
            ("install-tmp", "/tmp", None),
        ]
    );

    let mut want = vec![
        "build",
        "/src",
        "--runtime",
        "nodejs20",
        "--push",
        push.as_str(),
        "--digest-file",
        "/dev/termination-log",
        "--json",
    ];
    want.extend(options);
    want.extend(["--installed-dependencies", "/handoff"]);
    assert_eq!(build.args.as_ref().unwrap(), &want);
    assert_eq!(envs(build), registry_env());
    assert_eq!(
        mounts(build),
        [
            ("source", "/src", Some(true)),
            ("registry-config", "/docker-config", Some(true)),
            ("tmp", "/tmp", None),
            ("cache-key", "/cache-key", Some(true)),
            ("handoff", "/handoff", Some(true)),
        ]
    );
    // No step that holds the push credentials holds the package Secret, and the installer
    // holds neither the push credentials nor the caches the push trusts.
    for c in [prepare, install, build] {
        assert!(
            !mounts(c).iter().any(|m| m.0 == "package-registry-config"),
            "{}",
            c.name
        );
        assert!(!c
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("/package-registry")));
    }
    for c in [download, install] {
        assert!(!mounts(c)
            .iter()
            .any(|m| m.0 == "registry-config" || m.0 == "tmp" || m.0 == "cache-key"));
        assert!(!envs(c).iter().any(|(k, _)| k == "DOCKER_CONFIG"));
    }

    let vols = serde_json::to_value(pod.volumes.unwrap()).unwrap();
    assert_eq!(
        vols,
        json!([
            {"name": "source", "configMap": {"name": "hello"}},
            {"name": "registry-config", "secret": {"secretName": "serverless-registry-config-default", "optional": true,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache-key", "secret": {"secretName": "fnbuild-dependency-cache-key", "items": [{"key": "key", "path": "key"}]}},
            {"name": "handoff", "emptyDir": {}},
            {"name": "install-tmp", "emptyDir": {}},
            {"name": "package-registry-config", "secret": {"secretName": "serverless-package-registry-config", "optional": true}},
            {"name": "download-tmp", "emptyDir": {}},
        ])
    );

    // Python with a pip.conf; no package Secret → no flag, no volume.
    let mut py = with_packages(function());
    py.spec.runtime = "python312".into();
    py.spec.source.inline.as_mut().unwrap().dependencies = Some("six==1.16.0\n".into());
    let b = BuildInputs {
        npmrc: false,
        pip_conf: true,
        ..inputs(&py)
    };
    let download = pod_of(&build_job(&py, &s, &b)).init_containers.unwrap()[1].clone();
    assert_eq!(
        &download.args.unwrap()[4..],
        [
            "--handoff",
            "/handoff",
            "--step",
            "download",
            "--pip-conf",
            "/package-registry/pip.conf"
        ]
    );
    let b = BuildInputs { pip_conf: false, ..b };
    let p = pod_of(&build_job(&py, &s, &b));
    let init = p.init_containers.unwrap();
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["prepare", "install"]
    );
    assert_eq!(&init[1].args.as_ref().unwrap()[6..], ["--step", "all"]);
    assert_eq!(p.volumes.unwrap().len(), 6);
}

#[test]
fn the_builders_planner_decides_whether_packages_are_named() {
    let mut f = function();
    let with = |f: &mut Function, runtime: &str, deps: Option<&str>| {
        f.spec.runtime = runtime.into();
        f.spec.source.inline.as_mut().unwrap().dependencies = deps.map(String::from);
        names_packages(f)
    };
    assert!(!with(&mut f, "nodejs20", None));
    assert!(!with(&mut f, "nodejs22", Some("")));
    assert!(!with(&mut f, "nodejs20", Some(r#"{"name":"x","dependencies":{}}"#)));
    assert!(with(
        &mut f,
        "nodejs20",
        Some(r#"{"dependencies":{"left-pad":"1.3.0"}}"#)
    ));
    assert!(with(&mut f, "nodejs20", Some(r#"{"optionalDependencies":{"x":"1"}}"#)));
    // One the builder refuses: the split Pod (the build fails in a step without secrets).
    assert!(with(&mut f, "nodejs20", Some("not json")));
    assert!(!with(&mut f, "python312", None));
    assert!(!with(&mut f, "python312", Some("# nothing\n\n")));
    assert!(with(&mut f, "python312", Some("requests==2.32.3\n")));
    let mut g = function();
    g.spec.source.inline = None;
    assert!(
        names_packages(&g),
        "a source the controller cannot read may name packages"
    );
}

#[test]
fn a_git_source_is_fetched_by_a_step_of_its_own_and_seen_at_src() {
    let mut f = function();
    f.spec.source.inline = None;
    f.spec.source.git_repository = Some(crate::types::GitRepositorySource {
        url: "https://git.example.com/team/fns.git".into(),
        base_dir: Some("/hello/".into()),
        reference: Some("main".into()),
        auth: Some(crate::types::RepositoryAuth {
            type_: "basic".into(),
            secret_name: "git-creds".into(),
        }),
    });
    let commit = "c0ffee".repeat(6) + "c0ff";
    let b = BuildInputs {
        npmrc: false,
        git: Some(GitBuild {
            url: "https://git.example.com/team/fns.git".into(),
            commit: commit.clone(),
            dir: GitBuild::dir_of(Some("/hello/")),
            auth_secret: Some("git-creds".into()),
        }),
        install_step: false,
        ..inputs(&f)
    };
    // The dependencies of a git source are only known once fetched: first `fetch` and `build`,
    // which installs nothing (its handoff is empty: a layer from a cache, or EXIT_INSTALL_NEEDED).
    let quick = pod_of(&build_job(&f, &settings(), &b));
    let names: Vec<&str> = quick
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["fetch"]);
    let build = &quick.containers[0];
    assert!(
        build
            .args
            .as_ref()
            .unwrap()
            .windows(2)
            .any(|w| w == ["--installed-dependencies", "/handoff"]),
        "{:?}",
        build.args
    );
    assert!(mounts(build).contains(&("handoff", "/handoff", Some(true))));
    // Once a build said an install is needed: the split Pod after `fetch`.
    let b = BuildInputs {
        install_step: true,
        ..b
    };
    let pod = pod_of(&build_job(&f, &settings(), &b));
    let init = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fetch", "prepare", "install"]);
    let fetch = &init[0];
    restricted(fetch);
    assert_eq!(
        fetch.args.as_ref().unwrap(),
        &[
            "fetch-source",
            "--git-url",
            "https://git.example.com/team/fns.git",
            "--git-ref",
            commit.as_str(),
            "--git-dir",
            "hello",
            "--git-auth",
            "/git-auth",
            "/git"
        ]
    );
    assert_eq!(
        mounts(fetch),
        [
            ("source", "/git", None),
            ("tmp", "/tmp", None),
            ("git-auth", "/git-auth", Some(true))
        ]
    );
    // Only the fetch step has the git credentials; the others see the function's directory.
    for c in init.iter().skip(1).chain(&pod.containers) {
        assert!(!mounts(c).iter().any(|m| m.0 == "git-auth"), "{}", c.name);
        let src = c.volume_mounts.iter().flatten().find(|m| m.name == "source").unwrap();
        assert_eq!(
            (src.mount_path.as_str(), src.sub_path.as_deref()),
            ("/src", Some("checkout/hello")),
            "{}",
            c.name
        );
    }
    let volumes = pod.volumes.unwrap();
    let source = volumes.iter().find(|v| v.name == "source").unwrap();
    assert!(source.empty_dir.is_some() && source.config_map.is_none());
    let auth = volumes.iter().find(|v| v.name == "git-auth").unwrap();
    assert_eq!(auth.secret.as_ref().unwrap().secret_name.as_deref(), Some("git-creds"));
    let args = pod.containers[0].args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--revision", commit.as_str()]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--source-url", "https://git.example.com/team/fns.git"]),
        "{args:?}"
    );

    // The repository's root: the whole checkout.
    assert_eq!(GitBuild::dir_of(Some("/")), "");
    assert_eq!(GitBuild::dir_of(Some("./")), "");
    assert_eq!(GitBuild::dir_of(None), "");
    // Another commit is another image.
    let other = GitBuild {
        commit: "b".repeat(40),
        ..b.git.clone().unwrap()
    };
    assert_ne!(
        image_tag(&f, "node:20-slim", b.git.as_ref(), &[]),
        image_tag(&f, "node:20-slim", Some(&other), &[])
    );
}

#[test]
fn a_build_for_the_nodes_platforms_passes_them_to_the_steps_that_read_the_base() {
    let f = with_packages(function());
    let s = settings();
    let two = vec!["linux/amd64".to_string(), "linux/arm64".to_string()];
    let b = BuildInputs {
        platforms: two.clone(),
        ..inputs(&f)
    };
    let pod = pod_of(&build_job(&f, &s, &b));
    let init = pod.init_containers.as_ref().unwrap();
    let platform_of = |c: &Container| {
        let args = c.args.clone().unwrap();
        args.iter().position(|a| a == "--platform").map(|i| args[i + 1].clone())
    };
    // prepare and build read the base (each platform's); install and download take the
    // platform from each request.
    assert_eq!(platform_of(&init[0]).as_deref(), Some("linux/amd64,linux/arm64"));
    assert_eq!(
        platform_of(&pod.containers[0]).as_deref(),
        Some("linux/amd64,linux/arm64")
    );
    assert_eq!(platform_of(&init[1]), None);
    assert_eq!(platform_of(&init[2]), None);
    // One platform is the builder's own: no flag, and the tag of a build without platforms.
    let one = BuildInputs {
        platforms: vec!["linux/amd64".into()],
        ..inputs(&f)
    };
    assert_eq!(platform_of(&pod_of(&build_job(&f, &s, &one)).containers[0]), None);
    assert_eq!(
        image_tag(&f, "node:20-slim", None, &one.platforms),
        image_tag(&f, "node:20-slim", None, &[])
    );
    assert_ne!(
        image_tag(&f, "node:20-slim", None, &two),
        image_tag(&f, "node:20-slim", None, &[])
    );
}
