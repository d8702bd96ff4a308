//! Issue 15, tried as an attacker would: a function's dependency scripts, dependency files and
//! the caches cannot bring the build's credentials (the push registry's Docker config, the
//! `--npmrc` token, secrets in the builder's environment) into an image, the cache, `--json`,
//! the log at `-vv` or an error line. Each test builds with real npm, a real registry
//! (Debian's docker-registry) and checks every blob decompressed.

mod common;

use base64::Engine;
use common::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const REGISTRY_PASSWORD: &str = "reg1stry-PASSW0RD-7f3a9c";
const NPM_TOKEN: &str = "npm_T0KEN4fnbuildTESTS9x8y7z";
const ENV_SECRET: &str = "env-S3CRET-value-55aa66bb";

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Every form in which a secret must not appear.
fn forms(secret: &str) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        secret.to_string(),
        b64(&format!("fnbuild:{secret}")),
        b64(secret).trim_end_matches('=').to_string(),
    ]
}

fn secrets() -> Vec<String> {
    [REGISTRY_PASSWORD, NPM_TOKEN, ENV_SECRET]
        .iter()
        .flat_map(|s| forms(s))
        .collect()
}

/// The credentials a build is given: a Docker config for the registry, an .npmrc, an env secret.
struct Credentials {
    dir: tempfile::TempDir,
}

impl Credentials {
    fn new(registry: &Registry) -> Credentials {
        let dir = temp_dir("creds-");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("fnbuild:{REGISTRY_PASSWORD}"));
        write(
            &dir.path().join("docker/config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr()),
        );
        write(
            &dir.path().join("npmrc"),
            format!("//registry.npmjs.org/:_authToken={NPM_TOKEN}\n"),
        );
        Credentials { dir }
    }

    fn docker_config(&self) -> String {
        self.dir.path().join("docker").display().to_string()
    }

    fn npmrc(&self) -> String {
        self.dir.path().join("npmrc").display().to_string()
    }

    fn command(&self) -> Command {
        let mut c = fnbuild();
        c.env("DOCKER_CONFIG", self.docker_config())
            .env("FNBUILD_TEST_API_TOKEN", ENV_SECRET);
        c
    }
}

/// All bytes under `dir`, gzip members decompressed, as one searchable string per file.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok) {
        if !e.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        let mut data = bytes.clone();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            if flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .is_ok()
            {
                data.extend(plain);
            }
        }
        out.push((e.path().display().to_string(), data));
    }
    out
}

fn assert_no_secret_in(what: &str, name: &str, data: &[u8]) {
    for s in secrets() {
        assert!(
            !data.windows(s.len()).any(|w| w == s.as_bytes()),
            "{what}: {name} holds a form of a secret ({s})"
        );
    }
}

fn assert_no_secret_under(what: &str, dir: &Path) {
    for (name, data) in contents(dir) {
        assert_no_secret_in(what, &name, &data);
    }
}

/// A function whose local package's install script, and whose own postinstall, try to copy
/// every credential they can reach into the installed packages.
fn thief(creds: &Credentials) -> tempfile::TempDir {
    let src = temp_dir("fn-thief-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => require('evil').loot() };\n",
    );
    let steal = format!(
        "#!/bin/sh\nout=${{1:-.}}/stolen.txt\n{{ echo ran; env; cat '{docker}/config.json' '{npmrc}' \"$HOME/.docker/config.json\" /root/.docker/config.json; \
         cat /proc/$PPID/environ /proc/$PPID/cmdline; for p in $(pgrep fnbuild); do cat /proc/$p/environ; done; }} > \"$out\" 2>&1\nexit 0\n",
        docker = creds.docker_config(),
        npmrc = creds.npmrc(),
    );
    write(&src.path().join("evil/steal.sh"), &steal);
    write(
        &src.path().join("evil/package.json"),
        r#"{"name":"evil","version":"1.0.0","main":"index.js","scripts":{"postinstall":"sh steal.sh ."}}"#,
    );
    write(
        &src.path().join("evil/index.js"),
        "exports.loot = () => require('fs').readFileSync(__dirname + '/stolen.txt', 'utf8');\n",
    );
    write(
        &src.path().join("package.json"),
        r#"{"name":"thief","version":"1.0.0","dependencies":{"evil":"file:evil"},"scripts":{"postinstall":"sh evil/steal.sh node_modules"}}"#,
    );
    src
}

fn has_manifest(registry: &Registry, repo: &str, tag: &str) -> bool {
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/v2/{repo}/manifests/{tag}", registry.url()),
        &[("Accept", accept)],
        b"",
        std::time::Duration::from_secs(5),
    );
    status == 200
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn install_scripts_run_with_nothing_to_steal() {
    let registry = Registry::start();
    let creds = Credentials::new(&registry);
    let src = thief(&creds);
    let layout = temp_dir("layout-");
    let cache = temp_dir("cache-");
    let out = creds
        .command()
        .arg("build")
        .arg(src.path())
        .args([
            "--runtime",
            "nodejs20",
            "--base",
            &base_images().node_ref(),
            "-vv",
            "--json",
        ])
        .args(["--npmrc", &creds.npmrc()])
        .args(["--cache-dir", cache.path().to_str().unwrap()])
        .args(["--output", &format!("oci:{}:thief", layout.path().display())])
        .args(["--push", &registry.image("fn/thief:v1")])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert_no_secret_in("stdout and the -vv log", "output", text.as_bytes());
    assert_no_secret_under("the OCI layout", layout.path());
    assert_no_secret_under("the cache directory", cache.path());
    assert_no_secret_under("the registry's storage", registry.dir());

    // The scripts did run (in both places), and what they found is in the image: nothing.
    let rootfs = umoci_unpack(layout.path(), "thief");
    let root = rootfs.path().join("rootfs/usr/src/app/function/node_modules");
    for stolen in [root.join("evil/stolen.txt"), root.join("stolen.txt")] {
        let loot = std::fs::read_to_string(&stolen).unwrap_or_else(|e| panic!("{}: {e}", stolen.display()));
        assert!(loot.starts_with("ran"), "{loot}");
        assert!(
            !loot.contains("DOCKER_CONFIG=") && !loot.contains("FNBUILD_TEST_API_TOKEN"),
            "{loot}"
        );
    }
}

#[test]
fn a_layer_holding_a_credential_is_refused_and_nothing_is_written() {
    let registry = Registry::start();
    let creds = Credentials::new(&registry);
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("fnbuild:{REGISTRY_PASSWORD}"));
    for (file, content) in [
        ("config/registry.txt", format!("password={REGISTRY_PASSWORD}\n")),
        (
            "config/auth.json",
            format!("{{\"auths\":{{\"x\":{{\"auth\":\"{b64}\"}}}}}}"),
        ),
        ("env.txt", format!("TOKEN={ENV_SECRET}\n")),
        ("token.txt", NPM_TOKEN.to_string()),
    ] {
        let src = temp_dir("fn-leak-");
        write(
            &src.path().join("handler.js"),
            "module.exports = { main: () => 'x' };\n",
        );
        write(&src.path().join(file), &content);
        let layout = temp_dir("layout-");
        let out = creds
            .command()
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs20", "--base", &base_images().node_ref()])
            .args(["--npmrc", &creds.npmrc()])
            .args(["--output", &format!("oci:{}:leak", layout.path().display())])
            .args(["--push", &registry.image("fn/leak:v1")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ")
                && last.contains(file)
                && last.contains("holds one of this build's credentials"),
            "{file}: {last}"
        );
        assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
        assert_no_secret_in("stderr", file, stderr.as_bytes());
        assert!(
            !layout.path().join("index.json").exists(),
            "{file}: the layout was written"
        );
        assert!(
            !has_manifest(&registry, "fn/leak", "v1"),
            "{file}: a manifest was pushed"
        );
    }
}

#[test]
fn a_registry_echoing_the_authorization_header_never_shows_it() {
    // A registry that refuses every request and echoes back what it was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(40) {
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let challenge = if request.to_ascii_lowercase().contains("authorization:") {
                ""
            } else {
                "WWW-Authenticate: Basic realm=\"x\"\r\n"
            };
            let body = format!(
                "{{\"errors\":[{{\"code\":\"DENIED\",\"message\":\"you sent {}\"}}]}}",
                request.replace(['"', '\r', '\n'], " ")
            );
            let status = if !challenge.is_empty() {
                "401 Unauthorized"
            } else if request.starts_with("HEAD") {
                "404 Not Found"
            } else {
                "400 Bad Request"
            };
            let response = format!("HTTP/1.1 {status}\r\n{challenge}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = std::io::Write::write_all(&mut conn, response.as_bytes());
        }
    });
    let dir = temp_dir("creds-");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("fnbuild:{REGISTRY_PASSWORD}"));
    write(
        &dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#),
    );
    let src = temp_dir("fn-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => 'x' };\n",
    );
    let out = fnbuild()
        .env("DOCKER_CONFIG", dir.path())
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs20", "--base", &base_images().node_ref(), "-vv"])
        .args(["--push", &format!("{addr}/fn/x:v1")])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("you sent"), "the registry's message is shown: {text}");
    assert_no_secret_in("the error and the -vv log", "output", text.as_bytes());
    assert!(!text.contains(&auth[..12]), "{text}");
}

/// The three steps of a build Job, run here as the Job runs them: the prepare step pushes
/// nothing, the install step needs no registry, the last step takes its layer (checked) and
/// pushes; an install step's layer that does not match its record is refused.
#[test]
fn the_handoff_steps_build_what_one_build_would_and_check_what_they_are_handed() {
    let registry = Registry::start();
    let creds = Credentials::new(&registry);
    let src = thief(&creds);
    let handoff = temp_dir("handoff-");
    let cache = temp_dir("cache-");
    let cache_repo = registry.image("fnbuild-cache/ns");
    let image = registry.image("fn/steps:v1");
    let step = |extra: &[&str]| {
        let mut c = creds.command();
        c.arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs20", "--base", &base_images().node_ref(), "--json"])
            .args(["--cache-dir", cache.path().to_str().unwrap()])
            .args(["--cache-repo", &cache_repo, "--cache-key-file", &cache_key_file()])
            .args(["--push", &image])
            .args(extra);
        c.output().unwrap()
    };
    let out = step(&["--prepare-dependencies", handoff.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let prepared: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(prepared["install_requested"].is_string(), "{prepared}");
    assert!(handoff.path().join("request.json").is_file());
    assert!(!has_manifest(&registry, "fn/steps", "v1"), "the prepare step pushed");

    // The install step (all of it at once): no Docker config at all, only the npmrc.
    let install = |dir: &Path| {
        fnbuild()
            .env_remove("DOCKER_CONFIG")
            .arg("install-dependencies")
            .arg(src.path())
            .args([
                "--runtime",
                "nodejs20",
                "--handoff",
                dir.to_str().unwrap(),
                "--npmrc",
                &creds.npmrc(),
            ])
            .output()
            .unwrap()
    };
    // Where the install step could read the registry's config (a Job never mounts it there),
    // what it steals still never reaches the image: the last step refuses the layer.
    let leaky = temp_dir("handoff-leaky-");
    std::fs::copy(handoff.path().join("request.json"), leaky.path().join("request.json")).unwrap();
    let out = install(leaky.path());
    assert!(out.status.success(), "{}", output_text(&out));
    let out = step(&["--installed-dependencies", leaky.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds one of this build's credentials"), "{stderr}");
    assert_no_secret_in("stderr", "the last step", stderr.as_bytes());

    // As in a Job: the install step's container has no registry config.
    let hidden = creds.dir.path().join("docker-elsewhere");
    std::fs::rename(creds.dir.path().join("docker"), &hidden).unwrap();
    // And as a Job with a package-registry Secret runs it: the download with the .npmrc, then
    // the scripts in a step that has no credentials at all.
    let install_step = |name: &str, npmrc: bool| {
        let mut c = fnbuild();
        c.env_remove("DOCKER_CONFIG")
            .arg("install-dependencies")
            .arg(src.path())
            .args([
                "--runtime",
                "nodejs20",
                "--handoff",
                handoff.path().to_str().unwrap(),
                "--step",
                name,
            ]);
        if npmrc {
            c.args(["--npmrc", &creds.npmrc()]);
        }
        c.output().unwrap()
    };
    let out = install_step("download", true);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !handoff.path().join("installed.json").exists(),
        "the download step installed"
    );
    let npmrc_away = creds.dir.path().join("npmrc-elsewhere");
    std::fs::rename(creds.npmrc(), &npmrc_away).unwrap();
    let out = install_step("scripts", false);
    std::fs::rename(&npmrc_away, creds.npmrc()).unwrap();
    std::fs::rename(&hidden, creds.dir.path().join("docker")).unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(handoff.path().join("installed.json").exists());
    assert_no_secret_under("the handoff directory", handoff.path());

    // With nothing installed (the controller's build for a git source whose dependencies it
    // could not see): no installer runs, and the exit code says an install step is needed.
    let empty = temp_dir("handoff-empty-");
    let out = step(&["--installed-dependencies", empty.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(fnbuild::cli::EXIT_INSTALL_NEEDED), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .contains("no install step ran (this step never installs)"),
        "{stderr}"
    );
    assert!(!has_manifest(&registry, "fn/steps", "v1"), "nothing pushed");

    // A tampered layer is refused by the last step.
    let tampered = temp_dir("handoff-tampered-");
    for f in ["request.json", "installed.json", "layer.tar.gz"] {
        std::fs::copy(handoff.path().join(f), tampered.path().join(f)).unwrap();
    }
    let mut blob = std::fs::read(tampered.path().join("layer.tar.gz")).unwrap();
    let last = blob.len() - 10;
    blob[last] ^= 0x55;
    std::fs::write(tampered.path().join("layer.tar.gz"), blob).unwrap();
    let out = step(&["--installed-dependencies", tampered.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().contains("the installed layer is"),
        "{stderr}"
    );

    let out = step(&["--installed-dependencies", handoff.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["dependencies"]["cache"], "miss", "{built}");
    assert_eq!(built["dependencies"]["key"], prepared["install_requested"], "{built}");
    assert!(has_manifest(&registry, "fn/steps", "v1"));

    // Now the cache repository has the layer, signed: the next prepare step finds it.
    let fresh = temp_dir("handoff-2-");
    std::fs::remove_dir_all(cache.path()).unwrap();
    let out = step(&["--prepare-dependencies", fresh.path().to_str().unwrap()]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(again["install_requested"].is_null(), "{again}");
    assert_eq!(again["dependencies"]["cache"], "hit-registry", "{again}");
}

/// A cache entry pushed by someone who does not hold the builders' key is never used.
#[test]
fn cache_entries_without_a_valid_signature_are_misses() {
    let registry = Registry::start();
    let cache_repo = registry.image("fnbuild-cache/ns");
    let src = temp_dir("fn-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => require('dep').x };\n",
    );
    write(
        &src.path().join("dep/package.json"),
        r#"{"name":"dep","version":"1.0.0"}"#,
    );
    write(&src.path().join("dep/index.js"), "exports.x = 'genuine';\n");
    write(
        &src.path().join("package.json"),
        r#"{"dependencies":{"dep":"file:dep"}}"#,
    );
    let forger_key = temp_dir("key-");
    write(&forger_key.path().join("key"), "not-the-builders-key-0123456789");
    let build = |key: &str| {
        let out = fnbuild()
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs20", "--base", &base_images().node_ref(), "--json"])
            .args(["--cache-dir", temp_dir("cache-").path().to_str().unwrap()])
            .args(["--cache-repo", &cache_repo, "--cache-key-file", key])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // The forger fills the cache repository (with a key of their own).
    let forged = build(forger_key.path().join("key").to_str().unwrap());
    assert_eq!(forged["dependencies"]["cache"], "miss");
    let genuine = build(&cache_key_file());
    assert_eq!(
        genuine["dependencies"]["cache"], "miss",
        "the forged entry was taken: {genuine}"
    );
    assert_eq!(build(&cache_key_file())["dependencies"]["cache"], "hit-registry");

    // --cache-repo without a key is bad usage.
    let out = fnbuild()
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs20", "--cache-repo", &cache_repo])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cache-repo needs --cache-key-file"));
}

/// Damage to an output never reaches the cache, and damage to the cache is noticed.
#[test]
fn outputs_and_caches_share_no_bytes() {
    let src = temp_dir("fn-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => 'x' };\n",
    );
    write(
        &src.path().join("dep/package.json"),
        r#"{"name":"dep","version":"1.0.0"}"#,
    );
    write(
        &src.path().join("package.json"),
        r#"{"dependencies":{"dep":"file:dep"}}"#,
    );
    let cache = temp_dir("cache-");
    let build = |layout: &Path| {
        let out = fnbuild()
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs20", "--base", &base_images().node_ref(), "--json"])
            .args(["--cache-dir", cache.path().to_str().unwrap()])
            .args(["--output", &format!("oci:{}:x", layout.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let check_layout = |layout: &Path| {
        for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            use sha2::Digest;
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                e.file_name().to_str().unwrap(),
                "a blob does not match its digest"
            );
        }
    };
    let first = temp_dir("layout-");
    build(first.path());
    // Damage every blob of the first output in place.
    for e in std::fs::read_dir(first.path().join("blobs/sha256")).unwrap().flatten() {
        let mut bytes = std::fs::read(e.path()).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(e.path(), bytes).unwrap();
    }
    let second = temp_dir("layout-");
    build(second.path());
    check_layout(second.path());
    // Now damage the cache itself: the next build notices and writes good blobs.
    for e in walkdir::WalkDir::new(cache.path()).into_iter().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_file() && (name.ends_with(".blob") || e.path().parent().unwrap().ends_with("sha256")) {
            let mut bytes = std::fs::read(e.path()).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(e.path(), bytes).unwrap();
        }
    }
    let third = temp_dir("layout-");
    let result = build(third.path());
    check_layout(third.path());
    assert_eq!(result["dependencies"]["cache"], "miss", "{result}");
}
