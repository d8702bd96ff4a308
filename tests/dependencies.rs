//! Dependencies end to end: npm and pip packages installed by the host's own tools into a layer
//! of their own, cached locally and in a registry, images that run in Docker and use them,
//! credentials that reach no blob and no output, and clear failures that push nothing.
//!
//! The host's `npm` and `pip` are wrapped by shims (first on PATH) that record every invocation,
//! which is how a test proves that a cache hit ran no installer.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn node_base() -> String {
    base_images().node_ref()
}

fn python_base() -> String {
    base_images().python_ref()
}

/// `npm`, `pip`, `pip3` and `pip3.12` shims that log each invocation and run the real tool.
struct Shims {
    dir: tempfile::TempDir,
}

impl Shims {
    fn new() -> Shims {
        let dir = temp_dir("shims-");
        let real = |names: &[&str]| -> PathBuf {
            let path = std::env::var_os("PATH").unwrap();
            names
                .iter()
                .find_map(|n| {
                    std::env::split_paths(&path).map(|d| d.join(n)).find(|p| {
                        p.is_file()
                            && Command::new(p)
                                .arg("--version")
                                .output()
                                .is_ok_and(|o| o.status.success())
                    })
                })
                .unwrap_or_else(|| panic!("none of {names:?} works on this machine"))
        };
        let npm = real(&["npm"]);
        let pip = real(&["pip3", "pip"]);
        let log = dir.path().join("invocations.log");
        for (name, target) in [("npm", &npm), ("pip", &pip), ("pip3", &pip), ("pip3.12", &pip)] {
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                target.display()
            );
            let path = dir.path().join(name);
            write(&path, script);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Shims { dir }
    }

    fn path_env(&self) -> String {
        format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap())
    }

    /// Invocations that installed something (not `--version`).
    fn installs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("invocations.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.ends_with("--version"))
            .map(String::from)
            .collect()
    }
}

/// `fnbuild build SRC --runtime R --base B --json ARGS...` with the shims on PATH.
fn fnbuild_with(shims: &Shims, src: &Path, runtime: &str, base: &str, args: &[&str]) -> Command {
    let mut cmd = fnbuild();
    cmd.env("PATH", shims.path_env())
        .arg("build")
        .arg(src)
        .args(["--runtime", runtime, "--base", base, "--json"])
        .args(args);
    cmd
}

fn build_ok(shims: &Shims, src: &Path, runtime: &str, base: &str, args: &[&str]) -> (Value, String) {
    let mut cmd = fnbuild_with(shims, src, runtime, base, args);
    let out = cmd.output().unwrap();
    assert_success(&cmd, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {stdout}"));
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A build that must fail: its one error line (exit code 1, no panic).
fn build_err(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit code 1: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    errors[0].to_string()
}

fn roles(result: &Value) -> Vec<String> {
    result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap().to_string())
        .collect()
}

/// The layer with `role` (there must be one).
fn layer<'a>(result: &'a Value, role: &str) -> &'a Value {
    result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == role)
        .unwrap_or_else(|| panic!("no {role} layer: {result}"))
}

/// What the push did with the blob `digest`.
fn outcome(result: &Value, digest: &Value) -> String {
    result["outputs"][0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == *digest)
        .map(|b| b["outcome"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// Runs the pushed image as a Kyma function would run and returns its answer to GET /.
fn run_and_get(image: &str) -> String {
    let container = docker_run_detached(image, &["--read-only", "--tmpfs", "/tmp", "--user", "1000"]);
    let (status, _, body) = http_get(&container.url());
    assert_eq!(status, 200, "{image}: {body}\n{}", container.logs());
    body
}

fn pushed(result: &Value) -> String {
    result["outputs"][0]["image"].as_str().unwrap().to_string()
}

fn node_function(handler_body: &str, package_json: &str) -> tempfile::TempDir {
    let dir = temp_dir("fn-node-deps-");
    write(
        &dir.path().join("handler.js"),
        format!("module.exports = {{ main: function (event, context) {{ {handler_body} }} }};\n"),
    );
    write(&dir.path().join("package.json"), package_json);
    dir
}

fn python_function(handler_body: &str, requirements: &str) -> tempfile::TempDir {
    let dir = temp_dir("fn-py-deps-");
    write(
        &dir.path().join("handler.py"),
        format!("def main(event, context):\n{handler_body}\n"),
    );
    write(&dir.path().join("requirements.txt"), requirements);
    dir
}

fn registry_has_manifest(registry: &Registry, repo: &str, tag: &str) -> bool {
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/v2/{repo}/manifests/{tag}", registry.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
        std::time::Duration::from_secs(5),
    );
    status == 200
}

/// is-number for the function, left-pad only for development (never installed).
const IS_NUMBER: &str = r#"{"name":"uses-is-number","version":"1.0.0","dependencies":{"is-number":"7.0.0"},"devDependencies":{"left-pad":"1.3.0"}}"#;

#[test]
fn a_node_dependency_from_npm_is_installed_once_and_reused_when_only_the_handler_changes() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache = temp_dir("cache-");
    let cache_dir = cache.path().to_str().unwrap();
    let src = node_function(
        "var isNumber = require('is-number'); return 'v1 ' + isNumber(5) + ' ' + isNumber('x');",
        IS_NUMBER,
    );

    let (first, stderr) = build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &["--cache-dir", cache_dir, "--push", &registry.image("fn/node:v1")],
    );
    assert_eq!(
        roles(&first)[1..],
        ["libraries", "runtime", "dependencies", "function"],
        "{first}"
    );
    let deps = &first["dependencies"];
    assert_eq!(deps["cache"], "miss", "{deps}");
    assert_eq!(deps["key"].as_str().unwrap().len(), 64, "{deps}");
    assert!(deps["install_ms"].as_u64().unwrap() > 0, "{deps}");
    let installs = shims.installs();
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert!(
        installs[0].starts_with("npm install --omit=dev"),
        "no lock file: npm install: {installs:?}"
    );
    // The installer's output went to the log as it ran.
    assert!(stderr.contains("npm: added 1 package"), "{stderr}");
    assert_eq!(run_and_get(&pushed(&first)), "v1 true false");

    // Only the handler changes: no installer, the same dependency blob, which is not uploaded.
    write(&src.path().join("handler.js"), "module.exports = { main: function () { var isNumber = require('is-number'); return 'v2 ' + isNumber('7'); } };\n");
    let (second, _) = build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &["--cache-dir", cache_dir, "--push", &registry.image("fn/node:v2")],
    );
    assert_eq!(second["dependencies"]["cache"], "hit-local", "{second}");
    assert_eq!(second["dependencies"]["key"], first["dependencies"]["key"]);
    assert_eq!(second["dependencies"]["install_ms"], 0);
    assert_eq!(shims.installs().len(), 1, "no installer ran: {:?}", shims.installs());
    assert_eq!(
        layer(&second, "dependencies")["digest"],
        layer(&first, "dependencies")["digest"]
    );
    assert_ne!(
        layer(&second, "function")["digest"],
        layer(&first, "function")["digest"]
    );
    assert_eq!(outcome(&second, &layer(&second, "dependencies")["digest"]), "existed");
    let function_size = layer(&second, "function")["size"].as_u64().unwrap();
    let config_size = skopeo_inspect_raw(&format!("docker://{}", registry.image("fn/node:v2")))["config"]["size"]
        .as_u64()
        .unwrap();
    assert_eq!(
        second["outputs"][0]["bytes_uploaded"].as_u64().unwrap(),
        function_size + config_size,
        "only the function layer and the config are uploaded: {second}"
    );
    eprintln!(
        "handler-only rebuild: total {} ms (dependencies {} ms, outputs {} ms), {} HTTP requests, {} bytes uploaded",
        second["timings_ms"]["total"],
        second["timings_ms"]["dependencies"],
        second["timings_ms"]["outputs"],
        second["outputs"][0]["http_requests"],
        second["outputs"][0]["bytes_uploaded"]
    );
    assert_eq!(run_and_get(&pushed(&second)), "v2 true");

    // Dev dependencies are not installed.
    let out = temp_dir("layout-");
    build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &[
            "--cache-dir",
            cache_dir,
            "--output",
            &format!("oci:{}:x", out.path().display()),
        ],
    );
    let bundle = umoci_unpack(out.path(), "x");
    let modules = bundle.path().join("rootfs/usr/src/app/function/node_modules");
    assert!(modules.join("is-number/package.json").is_file());
    assert!(!modules.join("left-pad").exists(), "dev dependency installed");

    // --no-cache installs again, and the result is byte for byte the same layer.
    let (fresh, _) = build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &["--cache-dir", cache_dir, "--no-cache"],
    );
    assert_eq!(fresh["dependencies"]["cache"], "miss");
    assert_eq!(shims.installs().len(), 2, "{:?}", shims.installs());
    assert_eq!(
        layer(&fresh, "dependencies")["digest"],
        layer(&first, "dependencies")["digest"],
        "the install is reproducible"
    );
}

#[test]
fn a_node_dependency_from_a_local_tarball_is_installed_with_npm_ci() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache = temp_dir("cache-");
    let lib = temp_dir("greet-src-");
    write(
        &lib.path().join("package.json"),
        r#"{"name":"greet","version":"1.0.0","main":"index.js"}"#,
    );
    write(
        &lib.path().join("index.js"),
        "module.exports = function (who) { return 'hello ' + who + ' from a tarball'; };\n",
    );
    let src = node_function(
        "return require('greet')('kyma');",
        r#"{"name":"uses-greet","version":"1.0.0","dependencies":{"greet":"file:vendor/greet-1.0.0.tgz"}}"#,
    );
    std::fs::create_dir_all(src.path().join("vendor")).unwrap();
    run_ok(
        Command::new("npm")
            .current_dir(lib.path())
            .args(["pack", "--silent", "--pack-destination"])
            .arg(src.path().join("vendor")),
    );
    assert!(src.path().join("vendor/greet-1.0.0.tgz").is_file());
    // A lock file makes it `npm ci`.
    run_ok(
        Command::new("npm")
            .current_dir(src.path())
            .args(["install", "--package-lock-only", "--silent"]),
    );
    assert!(src.path().join("package-lock.json").is_file());

    let (result, _) = build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &[
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--push",
            &registry.image("fn/greet:v1"),
        ],
    );
    assert_eq!(result["dependencies"]["cache"], "miss");
    let installs = shims.installs();
    assert!(
        installs.len() == 1 && installs[0].starts_with("npm ci --omit=dev"),
        "{installs:?}"
    );
    assert_eq!(run_and_get(&pushed(&result)), "hello kyma from a tarball");

    // A new tarball under the same name is a new key (its bytes are part of it).
    let before = result["dependencies"]["key"].clone();
    write(
        &lib.path().join("index.js"),
        "module.exports = function (who) { return 'bonjour ' + who; };\n",
    );
    run_ok(
        Command::new("npm")
            .current_dir(lib.path())
            .args(["pack", "--silent", "--pack-destination"])
            .arg(src.path().join("vendor")),
    );
    // The lock file pins the tarball's integrity: it is made again for the new bytes (npm
    // keeps an entry whose spec did not change, so the old one goes first).
    std::fs::remove_file(src.path().join("package-lock.json")).unwrap();
    run_ok(
        Command::new("npm")
            .current_dir(src.path())
            .args(["install", "--package-lock-only", "--silent"]),
    );
    let (changed, _) = build_ok(
        &shims,
        src.path(),
        "nodejs20",
        &node_base(),
        &["--cache-dir", cache.path().to_str().unwrap()],
    );
    assert_ne!(changed["dependencies"]["key"], before);
}

#[test]
fn python_pure_and_compiled_wheels_are_installed_for_the_runtimes_python() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache = temp_dir("cache-");
    let cases = [
        (
            "six",
            python_function("    import six\n    return 'six ' + six.__version__ + ' ' + six.ensure_str(b'ok')", "six==1.16.0\n"),
            "six 1.16.0 ok",
        ),
        (
            "markupsafe",
            python_function(
                "    import markupsafe, markupsafe._speedups as speedups\n    return str(markupsafe.escape('<b>')) + ' ' + speedups.__file__.rsplit('/', 1)[-1]",
                "# a compiled extension: the wheel must be CPython 3.12's\nMarkupSafe==2.1.5\n",
            ),
            "&lt;b&gt; _speedups.cpython-312-x86_64-linux-gnu.so",
        ),
    ];
    for (name, src, want) in cases {
        let (result, _) = build_ok(
            &shims,
            src.path(),
            "python312",
            &python_base(),
            &[
                "--cache-dir",
                cache.path().to_str().unwrap(),
                "--push",
                &registry.image(&format!("fn/{name}:v1")),
            ],
        );
        assert_eq!(result["dependencies"]["cache"], "miss", "{name}");
        assert_eq!(
            roles(&result)[1..],
            ["libraries", "runtime", "dependencies", "function"],
            "{name}"
        );
        assert_eq!(run_and_get(&pushed(&result)), want, "{name}");
    }
    let installs = shims.installs();
    assert_eq!(installs.len(), 2, "{installs:?}");
    for i in &installs {
        assert!(i.contains(" install --target "), "{i}");
    }
}

#[test]
fn functions_with_the_same_dependency_files_share_one_blob_through_the_cache_repository() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache_repo = registry.image("fnbuild/cache");
    let (cache_a, cache_b) = (temp_dir("cache-a-"), temp_dir("cache-b-"));
    let a = node_function("return 'a ' + require('is-number')(1);", IS_NUMBER);
    let b = node_function("return 'b ' + require('is-number')('no');", IS_NUMBER);

    let (ra, _) = build_ok(
        &shims,
        a.path(),
        "nodejs20",
        &node_base(),
        &[
            "--cache-dir",
            cache_a.path().to_str().unwrap(),
            "--cache-repo",
            &cache_repo,
            "--cache-key-file",
            &cache_key_file(),
            "--push",
            &registry.image("fn/a:v1"),
        ],
    );
    assert_eq!(ra["dependencies"]["cache"], "miss");
    let deps_digest = layer(&ra, "dependencies")["digest"].clone();
    // The layer went to the cache repository first, so the image push mounted it from there.
    assert_eq!(outcome(&ra, &deps_digest), "mounted", "{ra}");
    let cache_tag = format!("nodejs20-{}", ra["dependencies"]["key"].as_str().unwrap());
    assert!(registry_has_manifest(&registry, "fnbuild/cache", &cache_tag));
    assert_eq!(ra["dependencies"]["cache_image"], format!("{cache_repo}:{cache_tag}"));

    // Another builder (an empty local cache) with another function and the same package.json.
    let (rb, _) = build_ok(
        &shims,
        b.path(),
        "nodejs20",
        &node_base(),
        &[
            "--cache-dir",
            cache_b.path().to_str().unwrap(),
            "--cache-repo",
            &cache_repo,
            "--cache-key-file",
            &cache_key_file(),
            "--push",
            &registry.image("fn/b:v1"),
        ],
    );
    assert_eq!(rb["dependencies"]["cache"], "hit-registry", "{rb}");
    assert_eq!(rb["dependencies"]["install_ms"], 0);
    assert_eq!(
        shims.installs().len(),
        1,
        "only the first build installed: {:?}",
        shims.installs()
    );
    assert_eq!(layer(&rb, "dependencies")["digest"], deps_digest);
    assert_eq!(outcome(&rb, &deps_digest), "mounted", "{rb}");
    assert_ne!(ra["digest"], rb["digest"]);

    // One blob in the registry's storage, linked from the three repositories.
    let hex = deps_digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
    let storage = registry.dir().join("storage/docker/registry/v2");
    assert!(storage.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])).is_file());
    for repo in ["fn/a", "fn/b", "fnbuild/cache"] {
        assert!(
            storage
                .join(format!("repositories/{repo}/_layers/sha256/{hex}/link"))
                .is_file(),
            "{repo}"
        );
    }
    assert_eq!(run_and_get(&pushed(&rb)), "b false");
}

// --- credentials ---------------------------------------------------------------------------------

const NPM_TOKEN: &str = "FNBUILD-NPM-TOKEN-3c9e7a51d";
const PIP_PASSWORD: &str = "FNBUILD-PIP-SECRET-84b2f06e";

/// A tiny HTTP server on 127.0.0.1 answering from `route(method, path, authorization)`;
/// counts the requests that carried the right credentials.
struct FakeServer {
    port: u16,
    authorized: Arc<AtomicUsize>,
}

type Route = dyn Fn(&str, Option<&str>) -> (u16, &'static str, Vec<u8>) + Send + Sync;

impl FakeServer {
    fn start(expected_auth: String, route: Box<Route>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let authorized = Arc::new(AtomicUsize::new(0));
        let count = authorized.clone();
        let route: Arc<Route> = Arc::from(route);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (route, count, expected) = (route.clone(), count.clone(), expected_auth.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut auth = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("authorization") {
                                auth = Some(v.trim().to_string());
                            }
                        }
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let ok = auth.as_deref() == Some(expected.as_str());
                    if ok {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let (status, content_type, body) = if ok {
                        route(&path, auth.as_deref())
                    } else {
                        (401, "text/plain", b"unauthorized".to_vec())
                    };
                    let mut stream = stream;
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nWWW-Authenticate: Basic realm=\"fake\"\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                });
            }
        });
        FakeServer { port, authorized }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A private npm registry serving `@fnprivate/secret-dep@1.0.0` to bearers of NPM_TOKEN.
fn private_npm_registry() -> FakeServer {
    let pkg = temp_dir("private-pkg-");
    write(
        &pkg.path().join("package.json"),
        r#"{"name":"@fnprivate/secret-dep","version":"1.0.0","main":"index.js"}"#,
    );
    write(&pkg.path().join("index.js"), "module.exports = 'private package ok';\n");
    let out = temp_dir("private-tgz-");
    run_ok(
        Command::new("npm")
            .current_dir(pkg.path())
            .args(["pack", "--silent", "--pack-destination"])
            .arg(out.path()),
    );
    let tgz = std::fs::read(out.path().join("fnprivate-secret-dep-1.0.0.tgz")).unwrap();
    use base64::Engine;
    use sha2::Digest;
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tgz))
    );
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let port_for_route = port_cell.clone();
    let server = FakeServer::start(
        format!("Bearer {NPM_TOKEN}"),
        Box::new(move |path, _| {
            let port = port_for_route.get().copied().unwrap_or(0);
            match path {
                "/@fnprivate%2fsecret-dep" | "/@fnprivate%2Fsecret-dep" | "/@fnprivate/secret-dep" => {
                    let doc = serde_json::json!({
                        "name": "@fnprivate/secret-dep",
                        "dist-tags": {"latest": "1.0.0"},
                        "versions": {"1.0.0": {
                            "name": "@fnprivate/secret-dep", "version": "1.0.0", "main": "index.js",
                            "dist": {
                                "tarball": format!("http://127.0.0.1:{port}/@fnprivate/secret-dep/-/secret-dep-1.0.0.tgz"),
                                "integrity": integrity,
                            }
                        }}
                    });
                    (200, "application/json", doc.to_string().into_bytes())
                }
                "/@fnprivate/secret-dep/-/secret-dep-1.0.0.tgz" => (200, "application/octet-stream", tgz.clone()),
                _ => (404, "application/json", b"{\"error\":\"not found\"}".to_vec()),
            }
        }),
    );
    port_cell.set(server.port).unwrap();
    server
}

/// A private package index serving the wheel `fnsecret-1.0` to fnuser:PIP_PASSWORD.
fn private_pip_index() -> FakeServer {
    let dir = temp_dir("private-wheel-");
    let wheel = dir.path().join("fnsecret-1.0-py3-none-any.whl");
    let script = r#"
import sys, zipfile
files = {
    "fnsecret/__init__.py": "VALUE = 'private wheel ok'\n",
    "fnsecret-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fnsecret\nVersion: 1.0\n",
    "fnsecret-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: fnbuild-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
files["fnsecret-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + "fnsecret-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
"#;
    run_ok(Command::new("python3").arg("-c").arg(script).arg(&wheel));
    let bytes = std::fs::read(&wheel).unwrap();
    let page = format!(
        "<!DOCTYPE html><html><body><a href=\"/files/fnsecret-1.0-py3-none-any.whl#sha256={}\">fnsecret-1.0-py3-none-any.whl</a></body></html>",
        sha256_hex(&bytes)
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("fnuser:{PIP_PASSWORD}"));
    FakeServer::start(
        format!("Basic {basic}"),
        Box::new(move |path, _| match path {
            "/simple/fnsecret/" | "/simple/fnsecret" => (200, "text/html", page.clone().into_bytes()),
            "/files/fnsecret-1.0-py3-none-any.whl" => (200, "application/octet-stream", bytes.clone()),
            _ => (404, "text/plain", b"not found".to_vec()),
        }),
    )
}

/// Every blob of the image (layers decompressed, config, manifest) and every file under `dirs`
/// (gzip files decompressed): none may contain `secret`.
fn assert_nowhere(secret: &str, image: &str, dirs: &[&Path]) {
    let layout = temp_dir("scan-");
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{image}"),
            ])
            .arg(format!("oci:{}:x", layout.path().display())),
    );
    let mut scanned = 0;
    let mut roots: Vec<PathBuf> = vec![layout.path().join("blobs/sha256")];
    roots.extend(dirs.iter().map(|d| d.to_path_buf()));
    for root in roots {
        for entry in walk_files(&root) {
            let raw = std::fs::read(&entry).unwrap();
            let mut bytes = raw.clone();
            if raw.starts_with(&[0x1f, 0x8b]) {
                bytes.clear();
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_end(&mut bytes)
                    .unwrap();
            }
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                entry.display()
            );
            scanned += 1;
        }
    }
    assert!(scanned >= 3, "scanned {scanned} files: a manifest, a config and layers");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(walk_files(&p));
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn npmrc_and_pip_conf_credentials_reach_no_layer_cache_or_output() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache = temp_dir("cache-");
    let cache_dir = cache.path().to_str().unwrap();
    let cache_repo = registry.image("fnbuild/cache");
    let secrets_dir = temp_dir("secrets-");

    // npm: a scoped package from a private registry that wants the token.
    let npm_registry = private_npm_registry();
    let npmrc = secrets_dir.path().join("npmrc");
    write(
        &npmrc,
        format!(
            "@fnprivate:registry=http://127.0.0.1:{port}/\n//127.0.0.1:{port}/:_authToken={NPM_TOKEN}\n",
            port = npm_registry.port
        ),
    );
    let node = node_function(
        "return require('@fnprivate/secret-dep');",
        r#"{"name":"private-user","version":"1.0.0","dependencies":{"@fnprivate/secret-dep":"1.0.0"}}"#,
    );
    // A copy of the npmrc in the function's directory too: it is never copied into the image.
    write(&node.path().join(".npmrc"), std::fs::read(&npmrc).unwrap());
    let mut cmd = fnbuild_with(
        &shims,
        node.path(),
        "nodejs20",
        &node_base(),
        &[
            "-v",
            "--cache-dir",
            cache_dir,
            "--cache-repo",
            &cache_repo,
            "--cache-key-file",
            &cache_key_file(),
            "--npmrc",
            npmrc.to_str().unwrap(),
            "--push",
            &registry.image("fn/private-node:v1"),
        ],
    );
    // npm's own download cache would answer for a tarball it has seen before: use an empty one.
    let npm_cache = temp_dir("npm-cache-");
    cmd.env("NPM_CONFIG_CACHE", npm_cache.path());
    let out = cmd.output().unwrap();
    assert_success(&cmd, &out);
    let used = npm_registry.authorized.load(Ordering::SeqCst);
    assert!(
        used >= 2,
        "the token was used for the packument and the tarball ({used} requests)"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(text).contains(NPM_TOKEN),
            "token in the output: {}",
            String::from_utf8_lossy(text)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run_and_get(&pushed(&result)), "private package ok");
    assert_nowhere(NPM_TOKEN, &registry.image("fn/private-node:v1"), &[cache.path()]);
    assert_nowhere(NPM_TOKEN, result["dependencies"]["cache_image"].as_str().unwrap(), &[]);

    // pip: a wheel from a private index behind basic auth.
    let index = private_pip_index();
    let pip_conf = secrets_dir.path().join("pip.conf");
    write(
        &pip_conf,
        format!(
            "[global]\nextra-index-url = http://fnuser:{PIP_PASSWORD}@127.0.0.1:{}/simple/\n",
            index.port
        ),
    );
    let python = python_function("    import fnsecret\n    return fnsecret.VALUE", "fnsecret==1.0\n");
    write(&python.path().join("pip.conf"), std::fs::read(&pip_conf).unwrap());
    let mut cmd = fnbuild_with(
        &shims,
        python.path(),
        "python312",
        &python_base(),
        &[
            "-v",
            "--cache-dir",
            cache_dir,
            "--cache-repo",
            &cache_repo,
            "--cache-key-file",
            &cache_key_file(),
            "--pip-conf",
            pip_conf.to_str().unwrap(),
            "--push",
            &registry.image("fn/private-py:v1"),
        ],
    );
    cmd.env("PIP_NO_CACHE_DIR", "1");
    let out = cmd.output().unwrap();
    assert_success(&cmd, &out);
    assert!(
        index.authorized.load(Ordering::SeqCst) >= 2,
        "the password was used for the page and the wheel"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(text).contains(PIP_PASSWORD),
            "password in the output: {}",
            String::from_utf8_lossy(text)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run_and_get(&pushed(&result)), "private wheel ok");
    assert_nowhere(PIP_PASSWORD, &registry.image("fn/private-py:v1"), &[cache.path()]);
    assert_nowhere(
        PIP_PASSWORD,
        result["dependencies"]["cache_image"].as_str().unwrap(),
        &[],
    );

    // A failing install that would echo the URL: the password is scrubbed from the error too.
    let missing = python_function("    return 1", "fnsecret==9.9\n");
    let err = build_err(&mut fnbuild_with(
        &shims,
        missing.path(),
        "python312",
        &python_base(),
        &["--cache-dir", cache_dir, "--pip-conf", pip_conf.to_str().unwrap()],
    ));
    assert!(!err.contains(PIP_PASSWORD), "{err}");
}

// --- failures --------------------------------------------------------------------------------------

#[test]
fn bad_dependency_files_fail_in_one_line_and_push_nothing() {
    let shims = Shims::new();
    let registry = Registry::start();
    let cache = temp_dir("cache-");
    let cache_dir = cache.path().to_str().unwrap();
    let cases: [(&str, tempfile::TempDir, &str, &[&str]); 5] = [
        (
            "misspelt-npm",
            node_function(
                "return 1;",
                r#"{"dependencies":{"is-numbr-fnbuild-does-not-exist":"7.0.0"}}"#,
            ),
            "nodejs20",
            &[
                "installing the packages of package.json: npm install failed (exit status: 1)",
                "E404",
                "is-numbr-fnbuild-does-not-exist",
            ],
        ),
        (
            "malformed-package-json",
            node_function("return 1;", "{\"dependencies\": {\"is-number\": \"7.0.0\",}}"),
            "nodejs20",
            &["package.json is not valid JSON: trailing comma at line 1"],
        ),
        (
            "malformed-requirements",
            python_function("    return 1", "six=1.16.0\n"),
            "python312",
            &[
                "requirements.txt line 1: \"six=1.16.0\" is not a requirement pip understands",
                "an exact version is written ==1.16.0",
            ],
        ),
        (
            "misspelt-pip",
            python_function("    return 1", "sixx-fnbuild-does-not-exist==1.16.0\n"),
            "python312",
            &[
                "pip install failed (exit status: 1)",
                "No matching distribution found for sixx-fnbuild-does-not-exist==1.16.0",
            ],
        ),
        (
            "no-wheel",
            // Source distributions only: when pip's Python is not the runtime's, only wheels will do.
            python_function("    return 1", "pycparser==2.18\n"),
            "python312",
            &[
                "pip install failed",
                "No matching distribution found for pycparser==2.18",
                "takes only wheels built for CPython 3.12",
            ],
        ),
    ];
    let host_pip_is_312 = Command::new("pip3")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("(python 3.12)"));
    for (name, src, runtime, wants) in cases {
        if name == "no-wheel" && host_pip_is_312 {
            continue; // pip would build the sdist itself
        }
        let base = if runtime == "nodejs20" {
            node_base()
        } else {
            python_base()
        };
        let before = shims.installs().len();
        let err = build_err(&mut fnbuild_with(
            &shims,
            src.path(),
            runtime,
            &base,
            &[
                "--cache-dir",
                cache_dir,
                "--push",
                &registry.image(&format!("fn/{name}:v1")),
            ],
        ));
        for want in wants.iter() {
            assert!(err.contains(want), "{name}: want {want:?} in: {err}");
        }
        assert!(
            !registry_has_manifest(&registry, &format!("fn/{name}"), "v1"),
            "{name}: something was pushed"
        );
        let ran = shims.installs().len() - before;
        if name.starts_with("malformed") {
            assert_eq!(ran, 0, "{name}: a malformed file runs no installer");
        }
        eprintln!("{name}: {err}");
    }
}

#[test]
fn no_dependency_file_or_no_packages_means_no_layer_and_no_installer() {
    let shims = Shims::new();
    let cache = temp_dir("cache-");
    let cases = [
        (
            node_function(
                "return 1;",
                r#"{"name":"f","version":"1.0.0","dependencies":{},"devDependencies":{"left-pad":"1.3.0"}}"#,
            ),
            "nodejs20",
        ),
        (python_function("    return 1", "# nothing yet\n\n"), "python312"),
    ];
    for (src, runtime) in cases {
        let base = if runtime == "nodejs20" {
            node_base()
        } else {
            python_base()
        };
        let (result, _) = build_ok(
            &shims,
            src.path(),
            runtime,
            &base,
            &["--cache-dir", cache.path().to_str().unwrap()],
        );
        assert_eq!(result["dependencies"]["cache"], "none", "{runtime}");
        assert!(result["dependencies"]["key"].is_null());
        assert_eq!(roles(&result)[1..], ["libraries", "runtime", "function"], "{runtime}");
    }
    let bare = temp_dir("fn-bare-");
    write(&bare.path().join("handler.js"), "module.exports = { main: () => 1 };\n");
    let (result, _) = build_ok(
        &shims,
        bare.path(),
        "nodejs20",
        &node_base(),
        &["--cache-dir", cache.path().to_str().unwrap()],
    );
    assert_eq!(result["dependencies"]["cache"], "none");
    assert!(
        std::fs::read_to_string(shims.dir.path().join("invocations.log"))
            .unwrap_or_default()
            .is_empty(),
        "no npm or pip ran at all"
    );
}
