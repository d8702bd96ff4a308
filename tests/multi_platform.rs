//! Multi-platform builds (issue 21): `--platform linux/amd64,linux/arm64` over a base that is an
//! image index gives an index with one image per platform, each over that platform's base and
//! with its own native dependencies, checked with skopeo and umoci, run in Docker (amd64) and
//! under qemu-user (arm64, the unpacked root filesystem: this machine's binfmt_misc is not
//! mounted, so Docker cannot run arm64 images here).
//!
//! The arm64 Node base is real (the official Node.js arm64 binary over Debian's arm64 libraries,
//! tests/support/make-multiarch-bases.sh); the arm64 Python base is a stand-in with no Python
//! in it (no CPython 3.12 for arm64 can be made here), so the Python image is checked by its
//! wheel's tags and its extension module's ELF header, not run.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const TWO: &str = "linux/amd64,linux/arm64";
/// Where the Python test loads its index into the Docker engine.
const LOADED: &str = "fnbuild-test/multi-escape:v1";

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn node_multi() -> String {
    format!("oci:{}:22", base_images().node22_multi.display())
}

fn python_multi() -> String {
    format!("oci:{}:3.12", base_images().python_multi.display())
}

/// fnbuild with an empty default cache of its own: only a `--cache-dir` a test names is shared
/// between builds.
fn fnb() -> Command {
    let mut cmd = fnbuild();
    cmd.env("XDG_CACHE_HOME", temp_dir("multi-xdg-").keep());
    cmd
}

/// `fnbuild build SRC --runtime R --base B ARGS... --json`, which must succeed.
fn build_ok(src: &Path, runtime: &str, base: &str, args: &[&str]) -> Value {
    let out = run_ok(
        fnb()
            .arg("build")
            .arg(src)
            .args(["--runtime", runtime, "--base", base, "--json"])
            .args(args),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {out}"))
}

/// A build that must fail: its one error line (exit code 1 or 2, no panic).
fn build_err(src: &Path, runtime: &str, base: &str, args: &[&str]) -> String {
    let out: Output = fnb()
        .arg("build")
        .arg(src)
        .args(["--runtime", runtime, "--base", base])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    errors[0].to_string()
}

/// A Kyma function that answers "Hello World!", and with `?native` what sharp (libvips, a
/// per-platform native package) says about itself and the machine it runs on.
fn sharp_function(greeting: &str) -> tempfile::TempDir {
    let dir = temp_dir("fn-multi-");
    write(
        &dir.path().join("handler.js"),
        format!(
            "module.exports = {{ main: function (event) {{\n\
             \x20 if (event.extensions.request.query.native === undefined) return '{greeting}';\n\
             \x20 const sharp = require('sharp');\n\
             \x20 return sharp.format.jpeg.id + ' ' + process.arch + ' libvips ' + sharp.versions.vips;\n\
             }} }};\n"
        ),
    );
    write(
        &dir.path().join("package.json"),
        r#"{"name":"thumbs","version":"1.0.0","dependencies":{"sharp":"0.34.4"}}"#,
    );
    dir
}

/// The platform entries of an index, as `os/architecture`.
fn index_platforms(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

/// The `--json` entry for `platform`.
fn image_for<'a>(result: &'a Value, platform: &str) -> &'a Value {
    result["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("no platforms in {result}"))
        .iter()
        .find(|p| p["platform"] == platform)
        .unwrap_or_else(|| panic!("no {platform} in {result}"))
}

fn layer_digest(image: &Value, role: &str) -> String {
    image["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == role)
        .unwrap_or_else(|| panic!("no {role} layer: {image}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `skopeo copy` of one platform's image of `reference` into a fresh OCI layout; unpacked by
/// umoci. Returns the bundle (its `rootfs/`).
fn unpack_platform(reference: &str, arch: &str) -> tempfile::TempDir {
    let layout = temp_dir("multi-layout-");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--override-os",
        "linux",
        "--override-arch",
        arch,
        &format!("docker://{reference}"),
        &format!("oci:{}:{arch}", layout.path().display()),
    ]));
    let bundle = umoci_unpack(layout.path(), arch);
    // The bundle outlives the layout it came from.
    std::mem::forget(layout);
    bundle
}

fn file_says(path: &Path) -> String {
    run_ok(Command::new("file").arg("-bL").arg(path))
}

/// The arm64 image's server, run from its unpacked root filesystem by qemu-aarch64-static
/// (chroot, as user 1000, with the image's environment); killed on drop.
struct QemuServer {
    child: Child,
    port: u16,
}

impl QemuServer {
    fn start(rootfs: &Path, config: &Value) -> QemuServer {
        let qemu = PathBuf::from("/usr/bin/qemu-aarch64-static");
        assert!(
            qemu.exists(),
            "qemu-user-static is not installed (tests/support/setup.sh installs it)"
        );
        std::fs::copy(&qemu, rootfs.join("qemu-aarch64-static")).unwrap();
        let port = free_port();
        let cfg = &config["config"];
        let entrypoint: Vec<&str> = cfg["Entrypoint"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(entrypoint, ["node", "/usr/src/app/server.js"], "{config}");
        let mut cmd = Command::new("/usr/sbin/chroot");
        cmd.arg("--userspec=1000:1000")
            .arg(rootfs)
            .args(["/qemu-aarch64-static", "/usr/local/bin/node", "/usr/src/app/server.js"])
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for kv in cfg["Env"].as_array().unwrap() {
            let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
            cmd.env(k, v);
        }
        cmd.env("FUNC_PORT", port.to_string());
        QemuServer {
            child: cmd.spawn().expect("chroot"),
            port,
        }
    }

    fn get(&self, path: &str) -> String {
        let (status, _, body) = http_request(
            "GET",
            &format!("http://127.0.0.1:{}{path}", self.port),
            &[],
            b"",
            std::time::Duration::from_secs(90),
        );
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

impl Drop for QemuServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_config(bundle: &Path) -> Value {
    // The image's Env and Entrypoint (+ Cmd), as umoci put them into the bundle's runtime config.
    let meta: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let env: Vec<Value> = meta["process"]["env"].as_array().unwrap().clone();
    let args = meta["process"]["args"].clone();
    serde_json::json!({"config": {"Env": env, "Entrypoint": args}})
}

#[test]
fn a_two_platform_node_build_is_an_index_whose_arm64_image_serves_with_its_own_native_package() {
    let registry = Registry::start();
    let cache = temp_dir("multi-cache-");
    let cache_dir = cache.path().to_str().unwrap();
    let src = sharp_function("Hello World!");
    let image = registry.image("fn/thumbs:v1");
    let result = build_ok(
        src.path(),
        "nodejs22",
        &node_multi(),
        &["--platform", TWO, "--push", &image, "--cache-dir", cache_dir],
    );
    assert_eq!(
        result["media_type"], "application/vnd.oci.image.index.v1+json",
        "{result}"
    );
    let (amd64, arm64) = (image_for(&result, "linux/amd64"), image_for(&result, "linux/arm64"));
    assert_ne!(amd64["digest"], arm64["digest"]);
    assert_ne!(
        amd64["base"]["digest"], arm64["base"]["digest"],
        "each over its own base"
    );
    // Runtime and function layers are one blob each; the dependency layer is per platform.
    for role in ["libraries", "runtime", "function"] {
        assert_eq!(layer_digest(amd64, role), layer_digest(arm64, role), "{role}");
    }
    assert_ne!(layer_digest(amd64, "dependencies"), layer_digest(arm64, "dependencies"));
    assert_eq!(amd64["dependencies"]["cache"], "miss");

    // What independent tools see: an index of both platforms, and every digest verifies.
    let index = skopeo_inspect_raw(&format!("docker://{image}"));
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"], "{index}");
    let copied = temp_dir("multi-copy-");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:v1", copied.path().display()),
    ]));

    // The arm64 image: an arm64 Node, the function where Kyma's runtime has it, sharp's arm64
    // binary and not the amd64 one.
    let bundle = unpack_platform(&image, "arm64");
    let rootfs = bundle.path().join("rootfs");
    let node = file_says(&rootfs.join("usr/local/bin/node"));
    assert!(node.contains("ARM aarch64"), "{node}");
    assert!(rootfs.join("usr/src/app/function/handler.js").is_file());
    let modules = rootfs.join("usr/src/app/function/node_modules/@img");
    let native = file_says(&modules.join("sharp-linux-arm64/lib/sharp-linux-arm64.node"));
    assert!(native.contains("ARM aarch64"), "{native}");
    assert!(
        !modules.join("sharp-linux-x64").exists(),
        "the amd64 binary is not in the arm64 image"
    );

    // It serves, under qemu-user: the Kyma hello world and the native call.
    let server = QemuServer::start(&rootfs, &read_config(bundle.path()));
    assert_eq!(server.get("/"), "Hello World!");
    let said = server.get("/?native");
    assert!(said.starts_with("jpeg arm64 libvips "), "{said}");
    drop(server);

    // The amd64 image runs in Docker, with its own sharp.
    let container = docker_run_detached(&image, &["--user", "1000"]);
    let (status, _, body) = http_get(&format!("{}/?native", container.url()));
    assert_eq!(status, 200, "{body}\n{}", container.logs());
    assert!(body.starts_with("jpeg x64 libvips "), "{body}");
    drop(container);

    // The same input, built again without any cache: the same index.
    let again = build_ok(
        src.path(),
        "nodejs22",
        &node_multi(),
        &["--platform", TWO, "--push", &image],
    );
    assert_eq!(again["digest"], result["digest"], "a rebuild gives the same index");

    // A handler change: both manifests and the index change; one function layer is uploaded.
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: function () { return 'Hello again!'; } };\n",
    );
    let changed = build_ok(
        src.path(),
        "nodejs22",
        &node_multi(),
        &["--platform", TWO, "--push", &image, "--cache-dir", cache_dir],
    );
    assert_ne!(changed["digest"], result["digest"]);
    for platform in ["linux/amd64", "linux/arm64"] {
        let (before, after) = (image_for(&result, platform), image_for(&changed, platform));
        assert_ne!(before["digest"], after["digest"], "{platform}");
        assert_eq!(
            layer_digest(before, "dependencies"),
            layer_digest(after, "dependencies")
        );
        assert_eq!(after["dependencies"]["cache"], "hit-local", "{platform}");
    }
    let function_layer = layer_digest(image_for(&changed, "linux/amd64"), "function");
    let configs: Vec<&Value> = changed["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["config_digest"])
        .collect();
    let uploaded: Vec<&str> = changed["outputs"][0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["outcome"] == "uploaded" && !configs.contains(&&b["digest"]))
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert_eq!(uploaded, [function_layer.as_str()], "{}", changed["outputs"]);
}

#[test]
fn a_python_build_for_every_platform_takes_each_platforms_wheel() {
    let registry = Registry::start();
    let src = temp_dir("fn-py-multi-");
    write(
        &src.path().join("handler.py"),
        "def main(event, context):\n    import markupsafe\n    return str(markupsafe.escape('<b>'))\n",
    );
    write(&src.path().join("requirements.txt"), "MarkupSafe==2.1.5\n");
    let image = registry.image("fn/escape:v1");
    // An OCI layout that holds another image already, and an archive (one image: this machine's).
    let out = temp_dir("multi-outputs-");
    let layout = out.path().join("layout");
    let archive = out.path().join("escape.tar");
    build_ok(
        src.path(),
        "python312",
        &python_multi(),
        &["--output", &format!("oci:{}:old", layout.display())],
    );
    let result = build_ok(
        src.path(),
        "python312",
        &python_multi(),
        &[
            "--platform",
            "all",
            "--push",
            &image,
            "--output",
            &format!("oci:{}:v1", layout.display()),
            "--output",
            &format!("docker-archive:{}:fn/escape:v1", archive.display()),
            "--load",
            LOADED,
        ],
    );
    let index = skopeo_inspect_raw(&format!("docker://{image}"));
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"], "{index}");
    let in_layout = skopeo_inspect_raw(&format!("oci:{}:v1", layout.display()));
    assert_eq!(in_layout, index, "the layout's index is the pushed one");
    assert_eq!(
        skopeo_inspect(&format!("oci:{}:old", layout.display()))["Architecture"],
        "amd64"
    );
    let archived = skopeo_inspect(&format!("docker-archive:{}", archive.display()));
    assert_eq!(archived["Architecture"], "amd64", "{archived}");
    assert_eq!(result["platforms"].as_array().unwrap().len(), 2, "{result}");
    let site = "kubeless/lib";
    for (arch, machine, tag) in [("amd64", "x86-64", "x86_64"), ("arm64", "ARM aarch64", "aarch64")] {
        let bundle = unpack_platform(&image, arch);
        let packages = bundle.path().join("rootfs").join(site);
        let module = packages.join(format!("markupsafe/_speedups.cpython-312-{tag}-linux-gnu.so"));
        let said = file_says(&module);
        assert!(said.contains(machine), "{arch}: {said}");
        let wheel = std::fs::read_to_string(packages.join("MarkupSafe-2.1.5.dist-info/WHEEL")).unwrap();
        assert!(
            wheel.contains(&format!("Tag: cp312-cp312-manylinux_2_17_{tag}")),
            "{arch}: {wheel}"
        );
    }
    // The engine got its own platform's image, which runs (the arm64 base is a stand-in without
    // Python, so only amd64 can).
    let loaded = run_ok(docker().args(["image", "inspect", "--format", "{{.Architecture}} {{.Id}}", LOADED]));
    let amd64_config = &image_for(&result, "linux/amd64")["config_digest"];
    assert_eq!(loaded.trim(), format!("amd64 {}", amd64_config.as_str().unwrap()));
    let container = docker_run_detached(LOADED, &["--user", "1000"]);
    let (status, _, body) = http_get(&container.url());
    assert_eq!((status, body.as_str()), (200, "&lt;b&gt;"), "{}", container.logs());
}

/// Nothing at all reached the registry: no blob, no manifest.
fn assert_nothing_pushed(registry: &Registry) {
    let blobs = registry.dir().join("storage/docker/registry/v2/blobs");
    assert!(!blobs.exists(), "something was pushed: {}", registry.log());
}

#[test]
fn bad_platforms_and_packages_without_a_binary_for_one_fail_in_one_line_and_push_nothing() {
    let registry = Registry::start();
    let image = registry.image("fn/bad:v1");
    let src = sharp_function("Hello World!");
    let single_amd64 = base_images().node_ref_for("22");
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "malformed",
            node_multi(),
            vec!["--platform", "linux/amd64,,linux/arm64"],
            "--platform",
        ),
        (
            "repeated",
            node_multi(),
            vec!["--platform", "linux/arm64,linux/arm64"],
            "linux/arm64",
        ),
        (
            "base lacks it",
            node_multi(),
            vec!["--platform", "linux/amd64,linux/s390x"],
            "linux/s390x",
        ),
        (
            "one-image base",
            single_amd64,
            vec!["--platform", TWO],
            "so it has no linux/arm64",
        ),
    ];
    for (what, base, args, want) in cases {
        let mut args = args;
        args.extend(["--push", image.as_str()]);
        let line = build_err(src.path(), "nodejs22", &base, &args);
        assert!(line.contains(want), "{what}: {line}");
    }

    // A package that compiles (or fetches) its binary for the builder's machine only: named,
    // with the platform it has nothing for.
    let native = temp_dir("fn-native-");
    write(
        &native.path().join("handler.js"),
        "module.exports = { main: () => require('hostbuilt') };\n",
    );
    let package = temp_dir("hostbuilt-");
    write(
        &package.path().join("package/package.json"),
        r#"{"name":"hostbuilt","version":"1.0.0","scripts":{"install":"mkdir -p build/Release && cp /bin/true build/Release/addon.node"}}"#,
    );
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(native.path().join("hostbuilt-1.0.0.tgz"))
            .arg("-C")
            .arg(package.path())
            .arg("package"),
    );
    write(
        &native.path().join("package.json"),
        r#"{"name":"uses-native","version":"1.0.0","dependencies":{"hostbuilt":"file:hostbuilt-1.0.0.tgz"}}"#,
    );
    let line = build_err(
        native.path(),
        "nodejs22",
        &node_multi(),
        &["--platform", TWO, "--push", &image],
    );
    assert!(
        line.contains("package hostbuilt has no prebuilt binary for linux/arm64"),
        "{line}"
    );
    assert!(line.contains("x86-64"), "{line}");

    // A wheel that exists for amd64 only (PyStemmer 2.2.0.3 has no aarch64 wheel for CPython 3.12).
    let py = temp_dir("fn-py-amd64-only-");
    write(
        &py.path().join("handler.py"),
        "def main(event, context):\n    return 'x'\n",
    );
    write(&py.path().join("requirements.txt"), "PyStemmer==2.2.0.3\n");
    let line = build_err(
        py.path(),
        "python312",
        &python_multi(),
        &["--platform", TWO, "--push", &image],
    );
    assert!(line.contains("PyStemmer") && line.contains("linux/arm64"), "{line}");
    assert_nothing_pushed(&registry);
}

#[test]
fn a_build_jobs_steps_hand_each_platforms_install_on_in_a_directory_of_its_own() {
    let registry = Registry::start();
    let src = sharp_function("Hello World!");
    let handoff = temp_dir("multi-handoff-");
    let dir = handoff.path().to_str().unwrap();
    let image = registry.image("fn/steps:v1");
    let step_cmd = |extra: &[&str]| {
        let mut cmd = fnb();
        cmd.arg("build").arg(src.path());
        cmd.args([
            "--runtime",
            "nodejs22",
            "--base",
            &node_multi(),
            "--platform",
            TWO,
            "--push",
            &image,
        ]);
        cmd.args(extra);
        cmd
    };
    let step = |extra: &[&str]| run_ok(&mut step_cmd(extra));
    // The prepare step asks the caches (none) and requests an install per platform; it pushes nothing.
    assert_eq!(step(&["--prepare-dependencies", dir]).trim(), "install requested");
    for platform in ["linux-amd64", "linux-arm64"] {
        assert!(
            handoff.path().join(platform).join("request.json").is_file(),
            "{platform}"
        );
    }
    assert_nothing_pushed(&registry);
    // The install step (no registry at all) installs both; the build step takes them.
    run_ok(
        fnb()
            .arg("install-dependencies")
            .arg(src.path())
            .args(["--runtime", "nodejs22", "--handoff", dir]),
    );
    let out = step(&["--installed-dependencies", dir, "--json"]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["platforms"].as_array().unwrap().len(), 2, "{result}");
    let bundle = unpack_platform(&image, "arm64");
    let modules = bundle.path().join("rootfs/usr/src/app/function/node_modules/@img");
    assert!(modules.join("sharp-linux-arm64").is_dir() && !modules.join("sharp-linux-x64").exists());
    // Without an install step the build step installs nothing and says so (exit 3, as for one platform).
    let empty = temp_dir("multi-handoff-empty-");
    let out = step_cmd(&["--installed-dependencies", empty.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
