//! `fnbuild build --push` against a real registry: what is uploaded, mounted or skipped,
//! credentials from a docker config.json, and clear failures that push nothing.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn function(greeting: &str) -> tempfile::TempDir {
    let dir = temp_dir("fn-");
    std::fs::write(
        dir.path().join("handler.js"),
        format!("module.exports = {{ main: () => '{greeting}' }};\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("util.js"), "exports.x = 1;\n").unwrap();
    dir
}

fn push(src: &Path, base: &str, targets: &[String], env: &[(&str, &str)]) -> Value {
    let mut cmd = fnbuild();
    cmd.arg("build")
        .arg(src)
        .args(["--runtime", "nodejs20", "--base", base, "--json"]);
    for t in targets {
        cmd.args(["--push", t]);
    }
    cmd.envs(env.iter().copied());
    serde_json::from_str(&run_ok(&mut cmd)).unwrap()
}

fn outcomes(result: &Value) -> Vec<(String, String)> {
    result["outputs"][0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                b["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn outcome_of<'a>(outcomes: &'a [(String, String)], digest: &Value) -> &'a str {
    outcomes
        .iter()
        .find(|(d, _)| d == digest.as_str().unwrap())
        .map(|(_, o)| o.as_str())
        .unwrap_or("absent")
}

#[test]
fn pushes_mount_the_base_and_upload_only_what_changed() {
    let registry = Registry::start();
    let base = registry.push_oci_layout(&base_images().node, "20", "base/node:20");
    let target = registry.image("team/hello:v1");
    let src = function("one");

    let first = push(
        src.path(),
        &base,
        &[target.clone(), registry.image("team/hello:latest")],
        &[],
    );
    let layers = first["layers"].as_array().unwrap();
    let first_outcomes = outcomes(&first);
    assert_eq!(
        outcome_of(&first_outcomes, &layers[0]["digest"]),
        "mounted",
        "base layer from base/node: {first_outcomes:?}"
    );
    assert_eq!(outcome_of(&first_outcomes, &layers[1]["digest"]), "uploaded");
    assert_eq!(outcome_of(&first_outcomes, &layers[2]["digest"]), "uploaded");
    assert_eq!(outcome_of(&first_outcomes, &first["config_digest"]), "uploaded");

    // skopeo copy fetches every blob and checks every digest; both tags name the new manifest.
    let copy = temp_dir("copy-");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:x", copy.path().display()),
    ]));
    for tag in ["v1", "latest"] {
        let inspected = skopeo_inspect(&format!("docker://{}", registry.image(&format!("team/hello:{tag}"))));
        assert_eq!(inspected["Digest"], first["digest"], "{tag}");
    }
    assert_eq!(
        first["outputs"][0]["image"],
        format!("{}@{}", target, first["digest"].as_str().unwrap())
    );

    // The same function again: nothing is uploaded.
    let again = push(src.path(), &base, &[target.clone()], &[]);
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(again["outputs"][0]["bytes_uploaded"], 0);
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "existed"),
        "{:?}",
        outcomes(&again)
    );

    // One source file changed: exactly the function layer and the config are uploaded.
    std::fs::write(src.path().join("util.js"), "exports.x = 2;\n").unwrap();
    let changed = push(src.path(), &base, &[target.clone()], &[]);
    let uploaded: Vec<_> = outcomes(&changed)
        .into_iter()
        .filter(|(_, o)| o == "uploaded")
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        uploaded,
        [
            changed["layers"].as_array().unwrap().last().unwrap()["digest"]
                .as_str()
                .unwrap(),
            changed["config_digest"].as_str().unwrap()
        ],
        "{changed}"
    );
    let requests = changed["outputs"][0]["http_requests"].as_u64().unwrap();
    eprintln!("one-file change: {requests} HTTP requests for the push");
    assert_eq!(
        skopeo_inspect(&format!("docker://{target}"))["Digest"],
        changed["digest"]
    );
}

#[test]
fn a_docker_schema2_base_in_a_registry_keeps_its_media_types() {
    let registry = Registry::start();
    let base = registry.push(&base_images().node_docker_dir_ref(), "base/node-docker:20");
    let result = push(function("d").path(), &base, &[registry.image("team/docker:v1")], &[]);
    let raw = skopeo_inspect_raw(&format!("docker://{}", registry.image("team/docker:v1")));
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    }
    assert_eq!(result["media_type"], raw["mediaType"]);
}

fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn credentials_come_from_docker_config_and_a_wrong_password_pushes_nothing() {
    let registry = Registry::start_htpasswd();
    let (user, password) = registry.credentials.clone().unwrap();
    // The base goes in with skopeo and the right credentials.
    let base = registry.image("base/node:20");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{user}:{password}"),
        &base_images().node_ref(),
        &format!("docker://{base}"),
    ]));
    let good = temp_dir("docker-config-");
    docker_config(good.path(), registry.addr(), &user, &password);
    let result = push(
        function("auth").path(),
        &base,
        &[registry.image("team/auth:v1")],
        &[("DOCKER_CONFIG", good.path().to_str().unwrap())],
    );
    assert!(result["digest"].as_str().unwrap().starts_with("sha256:"));

    let distinctive = "Wr0ng-pa55-7f3e9c";
    let bad = temp_dir("docker-config-");
    docker_config(bad.path(), registry.addr(), &user, distinctive);
    let out = fnbuild()
        .env("DOCKER_CONFIG", bad.path())
        .arg("build")
        .arg(function("nope").path())
        .args([
            "--runtime",
            "nodejs20",
            "--base",
            &base,
            "--push",
            &registry.image("team/denied:v1"),
            "-vv",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains(distinctive) && !stdout.contains(distinctive),
        "the password leaked: {stderr}"
    );
    let error = stderr.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains(registry.addr()), "names the registry: {}", error[0]);
    // Nothing was pushed under that name.
    let tags = Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            "--creds",
            &format!("{user}:{password}"),
            &format!("docker://{}", registry.image("team/denied")),
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tags.stdout).contains("v1"),
        "{}",
        String::from_utf8_lossy(&tags.stdout)
    );
}

#[test]
fn an_unreachable_registry_is_named_in_one_line() {
    let port = free_port();
    let out = fnbuild()
        .arg("build")
        .arg(function("x").path())
        .args([
            "--runtime",
            "nodejs20",
            "--base",
            &format!("oci:{}:20", base_images().node.display()),
        ])
        .args(["--push", &format!("127.0.0.1:{port}/team/x:v1")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains(&format!("127.0.0.1:{port}")), "{}", error[0]);
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_repeat_push_skips_blobs_it_left_there_and_recovers_when_the_registry_lost_them() {
    let registry = Registry::start();
    let tagged = registry.push_oci_layout(&base_images().node, "20", "base/node:20");
    let digest = skopeo_inspect(&format!("docker://{tagged}"))["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("{}/base/node@{digest}", registry.addr());
    let cache = temp_dir("cache-");
    let env = [("XDG_CACHE_HOME", cache.path().to_str().unwrap())];
    let target = registry.image("team/fast:v1");
    let src = function("fast");
    push(src.path(), &base, &[target.clone()], &env);

    // One file changed: the new layer and the config go straight up, the manifest in under its tag.
    std::fs::write(src.path().join("util.js"), "exports.x = 3;\n").unwrap();
    let changed = push(src.path(), &base, &[target.clone()], &env);
    assert_eq!(
        changed["outputs"][0]["http_requests"], 5,
        "2 × (POST + PUT), PUT manifest (no probe of a registry known to be open): {changed}"
    );
    assert_eq!(
        skopeo_inspect(&format!("docker://{target}"))["Digest"],
        changed["digest"]
    );

    // A changed file shows before its layer is compressed: the uploads' sessions were opened
    // meanwhile, and the registry holds no session left open.
    // (Distribution keeps a finished session's directory, but not its `startedat`.)
    let uploads = registry
        .dir()
        .join("storage/docker/registry/v2/repositories/team/fast/_uploads");
    let open_sessions = || {
        std::fs::read_dir(&uploads).map_or(0, |d| {
            d.filter(|e| e.as_ref().unwrap().path().join("startedat").exists())
                .count()
        })
    };
    assert_eq!(open_sessions(), 0);

    // The same image again after the layer cache was lost: both layers are compressed anew, so
    // three sessions (two layers and the config) are opened ahead; nothing is new, and they are
    // cancelled alongside the manifest.
    std::fs::remove_dir_all(cache.path().join("fnbuild/layers")).unwrap();
    let again = push(src.path(), &base, &[target.clone()], &env);
    assert_eq!(again["digest"], changed["digest"]);
    assert!(outcomes(&again).iter().all(|(_, o)| o == "existed"), "{again}");
    assert_eq!(
        again["outputs"][0]["http_requests"], 7,
        "3 × (POST, DELETE) for the sessions opened ahead, PUT manifest: {again}"
    );
    assert_eq!(open_sessions(), 0, "unused upload sessions are cancelled");

    // The registry forgets the repository (as after garbage collection): the record is stale,
    // the registry refuses the manifest, and the push is done again, checking every blob.
    let repo = registry.dir().join("storage/docker/registry/v2/repositories/team/fast");
    std::fs::remove_dir_all(&repo).unwrap();
    std::fs::write(src.path().join("util.js"), "exports.x = 4;\n").unwrap();
    let recovered = push(src.path(), &base, &[target.clone()], &env);
    let copy = temp_dir("copy-");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:x", copy.path().display()),
    ]));
    assert_eq!(
        skopeo_inspect(&format!("docker://{target}"))["Digest"],
        recovered["digest"]
    );
}

#[test]
fn every_transport_is_an_output_and_each_holds_the_same_image() {
    let registry = Registry::start();
    let base = registry.push_oci_layout(&base_images().node, "20", "base/node:20");
    let src = function("every output");
    let layout = temp_dir("out-");
    let pushed = registry.image("team/outputs:v1");
    let loaded = "fnbuild-test/outputs-daemon:t";
    let mut cmd = fnbuild();
    cmd.arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs20", "--base", &base, "--json"]);
    for output in [
        format!("oci:{}:v1", layout.path().display()),
        format!("docker://{pushed}"),
        format!("docker-daemon:{loaded}"),
    ] {
        cmd.args(["--output", &output]);
    }
    let result: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    let digest = result["digest"].as_str().unwrap();
    let outputs: Vec<&str> = result["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["output"].as_str().unwrap())
        .collect();
    // Files and the daemon first, the push last.
    assert_eq!(
        outputs,
        [
            format!("oci:{}:v1", layout.path().display()),
            format!("docker-daemon:docker.io/{loaded}"),
            format!("docker://{pushed}"),
        ]
    );
    // skopeo, the registry and the daemon each see the image fnbuild reported.
    assert_eq!(skopeo_inspect(&format!("docker://{pushed}"))["Digest"], digest);
    let index: Value = serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest);
    let config = result["config_digest"].as_str().unwrap();
    let id = run_ok(docker().args(["image", "inspect", "--format", "{{.Id}}", loaded]));
    assert_eq!(id.trim(), config, "the daemon's image id is the config digest");
}
