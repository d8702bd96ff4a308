//! `fnbuild build` end to end: layouts checked with umoci and skopeo, images run in Docker,
//! reproducibility, edge-case trees, and clear errors on bad input.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NODE_HELLO: &str = "module.exports = { main: function (event, context) { return \"Hello World!\"; } }\n";
const PYTHON_HELLO: &str = "def main(event, context):\n    return \"Hello World!\"\n";

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn node_function() -> tempfile::TempDir {
    let dir = temp_dir("fn-node-");
    write(&dir.path().join("handler.js"), NODE_HELLO);
    write(
        &dir.path().join("package.json"),
        "{\"name\":\"hello\",\"version\":\"1.0.0\",\"dependencies\":{}}\n",
    );
    dir
}

fn python_function() -> tempfile::TempDir {
    let dir = temp_dir("fn-py-");
    write(&dir.path().join("handler.py"), PYTHON_HELLO);
    write(&dir.path().join("requirements.txt"), "");
    dir
}

/// `fnbuild build SRC --runtime R --base B ARGS... --json`, which must succeed; returns the JSON result.
fn build_ok(src: &Path, runtime: &str, base: &str, args: &[&str]) -> Value {
    let out = run_ok(
        fnbuild()
            .arg("build")
            .arg(src)
            .args(["--runtime", runtime, "--base", base, "--json"])
            .args(args),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {out}"))
}

/// Runs a build that must fail; returns its stderr after checking the exit code and that it is one clear line.
fn build_err(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure, got success: {stderr}");
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "exit code {:?}: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let error_lines: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error_lines.len(), 1, "want one error line: {stderr}");
    error_lines[0].to_string()
}

fn node_base() -> String {
    format!("oci:{}:20", base_images().node.display())
}

fn python_base() -> String {
    format!("oci:{}:3.12", base_images().python.display())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn oci_layout_holds_the_function_and_runtime_where_the_runtime_says() {
    for (runtime, src, base, function_dir, handler, entry) in [
        (
            "nodejs20",
            node_function(),
            node_base(),
            "usr/src/app/function",
            "handler.js",
            "node",
        ),
        (
            "nodejs22",
            node_function(),
            node_base(),
            "usr/src/app/function",
            "handler.js",
            "node",
        ),
        (
            "nodejs24",
            node_function(),
            base_images().node_ref_for("24"),
            "usr/src/app/function",
            "handler.js",
            "node",
        ),
        (
            "python312",
            python_function(),
            python_base(),
            "kubeless",
            "handler.py",
            "python3",
        ),
    ] {
        let out = temp_dir("out-");
        let layout = out.path().join("layout");
        let result = build_ok(
            src.path(),
            runtime,
            &base,
            &["--output", &format!("oci:{}:fn", layout.display())],
        );
        let bundle = umoci_unpack(&layout, "fn");
        let rootfs = bundle.path().join("rootfs");
        let handler_path = rootfs.join(function_dir).join(handler);
        assert_eq!(
            std::fs::read(&handler_path).unwrap(),
            std::fs::read(src.path().join(handler)).unwrap(),
            "{runtime}"
        );
        assert_eq!(mode(&handler_path), 0o644, "{runtime}");
        assert_eq!(owner(&handler_path), (0, 0), "{runtime}");
        assert_eq!(mode(&rootfs.join(function_dir)), 0o755, "{runtime}");
        assert!(rootfs
            .join("usr/src/app")
            .join(if entry == "node" { "server.js" } else { "server.py" })
            .is_file());
        // The base's directories are untouched: /tmp keeps its sticky mode.
        assert_eq!(mode(&rootfs.join("tmp")), 0o1777, "{runtime}");

        let config = skopeo_inspect_config(&format!("oci:{}:fn", layout.display()));
        let c = &config["config"];
        assert_eq!(c["User"], "1000");
        assert_eq!(c["Entrypoint"][0], entry);
        assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
        let env: Vec<&str> = c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&format!("FUNC_RUNTIME={runtime}").as_str()), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "base env kept: {env:?}");
        assert_eq!(
            result["layers"].as_array().unwrap().len(),
            config["rootfs"]["diff_ids"].as_array().unwrap().len()
        );
        assert_eq!(result["layers"].as_array().unwrap().last().unwrap()["role"], "function");
    }
}

#[test]
fn docker_archive_and_load_give_images_that_run_the_handler() {
    for (runtime, src, base) in [
        ("nodejs20", node_function(), node_base()),
        ("python312", python_function(), python_base()),
    ] {
        let out = temp_dir("out-");
        let archive = out.path().join("image.tar");
        let name = format!("fnbuild-test/archive-{runtime}:t");
        let loaded = format!("fnbuild-test/loaded-{runtime}:t");
        build_ok(
            src.path(),
            runtime,
            &base,
            &[
                "--output",
                &format!("docker-archive:{}:{name}", archive.display()),
                "--load",
                &loaded,
            ],
        );
        let names = docker_load(&archive);
        assert!(
            names.iter().any(|n| n.contains(&format!("archive-{runtime}:t"))),
            "{names:?}"
        );
        for image in [name.as_str(), loaded.as_str()] {
            let container = docker_run_detached(image, &["--read-only", "--tmpfs", "/tmp", "--user", "1000"]);
            let (status, _, body) = http_get(&container.url());
            assert_eq!(
                (status, body.as_str()),
                (200, "Hello World!"),
                "{runtime} {image}: {}",
                container.logs()
            );
        }
    }
}

#[test]
fn a_docker_family_base_gets_docker_layer_media_types() {
    let src = node_function();
    let out = temp_dir("out-");
    let base = format!("docker-archive:{}", base_images().node_docker_archive.display());
    let result = build_ok(
        src.path(),
        "nodejs20",
        &base,
        &["--output", &format!("oci:{}:d", out.path().display())],
    );
    assert_eq!(
        result["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    for layer in result["layers"].as_array().unwrap() {
        assert_eq!(
            layer["media_type"], "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "{layer}"
        );
    }
    // docker-daemon: reads the same image through the Engine API.
    let daemon_base = format!("docker-daemon:{}", docker_load_node());
    let from_daemon = build_ok(src.path(), "nodejs20", &daemon_base, &[]);
    let function_layer = |r: &Value| r["layers"].as_array().unwrap().last().unwrap()["digest"].clone();
    assert_eq!(function_layer(&from_daemon), function_layer(&result));
}

#[test]
fn a_configmap_mount_with_kyma_keys_builds() {
    let mount = temp_dir("cm-");
    let generation = mount.path().join("..2026_11_25_10_00_00.000000001");
    write(&generation.join("source"), NODE_HELLO);
    write(&generation.join("dependencies"), "{\"name\":\"f\"}");
    symlink("..2026_11_25_10_00_00.000000001", mount.path().join("..data")).unwrap();
    symlink("..data/source", mount.path().join("source")).unwrap();
    symlink("..data/dependencies", mount.path().join("dependencies")).unwrap();
    let out = temp_dir("out-");
    build_ok(
        mount.path(),
        "nodejs20",
        &node_base(),
        &["--output", &format!("oci:{}:cm", out.path().display())],
    );
    let bundle = umoci_unpack(out.path(), "cm");
    let function = bundle.path().join("rootfs/usr/src/app/function");
    let mut names: Vec<_> = std::fs::read_dir(&function)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["handler.js", "package.json"]);
    assert_eq!(
        std::fs::read_to_string(function.join("handler.js")).unwrap(),
        NODE_HELLO
    );
    assert!(!std::fs::symlink_metadata(function.join("handler.js"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Copies a tree, creating entries in reverse order and giving them other mtimes.
fn copy_shuffled(from: &Path, to: &Path) {
    let mut entries: Vec<PathBuf> = walk(from);
    entries.reverse();
    for entry in entries {
        let rel = entry.strip_prefix(from).unwrap();
        let target = to.join(rel);
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if meta.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if meta.file_type().is_symlink() {
            symlink(std::fs::read_link(&entry).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(&entry, &target).unwrap();
            Command::new("touch")
                .args(["-d", "2001-02-03 04:05:06"])
                .arg(&target)
                .status()
                .unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn the_same_input_gives_the_same_digest_and_one_changed_byte_another() {
    let a = node_function();
    write(&a.path().join("lib/util.js"), "exports.x = 1;\n");
    symlink("lib/util.js", a.path().join("util.js")).unwrap();
    let b = temp_dir("fn-copy-");
    copy_shuffled(a.path(), b.path());
    let first = build_ok(a.path(), "nodejs20", &node_base(), &[]);
    // Another working directory, other mtimes, other creation order.
    let second = run_ok(
        fnbuild()
            .current_dir(b.path().parent().unwrap())
            .arg("build")
            .arg(b.path().file_name().unwrap())
            .args(["--runtime", "nodejs20", "--base", &node_base(), "--json"]),
    );
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(first["digest"], second["digest"]);

    write(&b.path().join("lib/util.js"), "exports.x = 2;\n");
    let changed = build_ok(b.path(), "nodejs20", &node_base(), &[]);
    assert_ne!(first["digest"], changed["digest"]);
    let roles: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["base", "libraries", "runtime", "function"]);
    assert_eq!(
        first["layers"][1]["digest"], changed["layers"][1]["digest"],
        "the library layer does not change"
    );
    assert_eq!(
        first["layers"][2]["digest"], changed["layers"][2]["digest"],
        "the runtime layer does not change"
    );
    assert_ne!(first["layers"][3]["digest"], changed["layers"][3]["digest"]);
}

#[test]
fn source_date_epoch_changes_exactly_the_timestamps() {
    let src = node_function();
    let out = temp_dir("out-");
    let layout = out.path().display().to_string();
    build_ok(
        src.path(),
        "nodejs20",
        &node_base(),
        &["--output", &format!("oci:{layout}:default")],
    );
    let dated = run_ok(
        fnbuild()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("build")
            .arg(src.path())
            .args([
                "--runtime",
                "nodejs20",
                "--base",
                &node_base(),
                "--output",
                &format!("oci:{layout}:dated"),
            ]),
    );
    assert!(dated.trim().starts_with("sha256:"));
    let config = |tag: &str| skopeo_inspect_config(&format!("oci:{layout}:{tag}"));
    let (mut plain, mut with_epoch) = (config("default"), config("dated"));
    assert_eq!(plain["created"], "1970-01-01T00:00:01Z");
    assert_eq!(with_epoch["created"], "2023-11-14T22:13:20Z");
    let bundle = umoci_unpack(out.path(), "dated");
    let handler = bundle.path().join("rootfs/usr/src/app/function/handler.js");
    let mtime = std::fs::metadata(handler).unwrap().modified().unwrap();
    assert_eq!(
        mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        1_700_000_000
    );
    // Take the timestamps (and the layer digests that hash them) away: nothing else differs.
    for c in [&mut plain, &mut with_epoch] {
        c["created"] = Value::Null;
        for h in c["history"].as_array_mut().unwrap() {
            h["created"] = Value::Null;
        }
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().truncate(1);
    }
    assert_eq!(plain, with_epoch);
}

#[test]
fn edge_case_trees_build_and_unpack_exactly() {
    let src = node_function();
    let d = src.path();
    let long = format!(
        "{}/{}.js",
        "nested-directory-name".repeat(3),
        "a-long-file-name".repeat(5)
    );
    assert!(long.len() > 100);
    write(&d.join(&long), "long");
    let big: Vec<u8> = (0..(9 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&d.join("big.bin"), &big);
    write(&d.join("empty"), "");
    write(&d.join("run.sh"), "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(d.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&d.join("grüße/日本語.txt"), "unicode");
    for i in 0..10_000 {
        write(&d.join(format!("many/{:02}/{i}.txt", i % 50)), format!("file {i}\n"));
    }
    std::fs::create_dir_all(d.join("node_modules_local/.bin")).unwrap();
    write(&d.join("node_modules_local/tool/cli.js"), "cli");
    symlink("../tool/cli.js", d.join("node_modules_local/.bin/tool")).unwrap();

    let out = temp_dir("out-");
    build_ok(
        d,
        "nodejs20",
        &node_base(),
        &["--output", &format!("oci:{}:edge", out.path().display())],
    );
    let bundle = umoci_unpack(out.path(), "edge");
    let f = bundle.path().join("rootfs/usr/src/app/function");
    assert_eq!(std::fs::read_to_string(f.join(&long)).unwrap(), "long");
    assert_eq!(std::fs::read(f.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(f.join("empty")).unwrap(), b"");
    assert_eq!(mode(&f.join("run.sh")), 0o755);
    assert_eq!(mode(&f.join("empty")), 0o644);
    assert_eq!(std::fs::read_to_string(f.join("grüße/日本語.txt")).unwrap(), "unicode");
    assert_eq!(
        std::fs::read_to_string(f.join("many/07/9957.txt")).unwrap(),
        "file 9957\n"
    );
    assert_eq!(walk(&f.join("many")).len(), 10_050);
    let link = f.join("node_modules_local/.bin/tool");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../tool/cli.js"));
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "cli");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_non_zero_exit() {
    let src = node_function();
    let base = node_base();
    let build_from = |dir: &Path, runtime: &str, base: &str| {
        let mut c = fnbuild();
        c.arg("build").arg(dir).args(["--runtime", runtime, "--base", base]);
        c
    };
    let build = |dir: &Path, runtime: &str| build_from(dir, runtime, &base);

    let err = build_err(&mut build(src.path(), "nodejs18"));
    assert!(
        err.contains("unknown runtime 'nodejs18'") && err.contains("nodejs20, nodejs22, nodejs24, python312"),
        "{err}"
    );

    let empty = temp_dir("fn-empty-");
    let err = build_err(&mut build(empty.path(), "nodejs20"));
    assert!(err.contains("missing handler file handler.js"), "{err}");

    let escaping = node_function();
    symlink("../../../etc/passwd", escaping.path().join("passwd")).unwrap();
    let err = build_err(&mut build(escaping.path(), "nodejs20"));
    assert!(err.contains("points outside the source directory"), "{err}");

    let mount = temp_dir("cm-");
    write(&mount.path().join("..data/handler.js"), NODE_HELLO);
    write(&mount.path().join("..data/sub/x.js"), "x");
    symlink("..data/handler.js", mount.path().join("handler.js")).unwrap();
    let err = build_err(&mut build(mount.path(), "nodejs20"));
    assert!(err.contains("ConfigMap key 'sub/...'"), "{err}");
    let mount2 = temp_dir("cm-");
    write(&mount2.path().join("..data/handler.js"), NODE_HELLO);
    symlink("..data/handler.js", mount2.path().join("handler.js")).unwrap();
    symlink("..data/../../secret", mount2.path().join("evil")).unwrap();
    write(&mount2.path().parent().unwrap().join("secret"), "s");
    let err = build_err(&mut build(mount2.path(), "nodejs20"));
    assert!(err.contains("ConfigMap key 'evil'"), "{err}");

    // Unreadable for the user running the build (root reads everything, so run as nobody).
    let unreadable = node_function();
    write(&unreadable.path().join("secret.txt"), "s");
    std::fs::set_permissions(
        unreadable.path().join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    for p in [
        unreadable.path().to_path_buf(),
        unreadable.path().parent().unwrap().to_path_buf(),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A base layout nobody can read, so that only the function's file is unreadable.
    let readable_base = temp_dir("base-copy-");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(base_images().node.join("."))
            .arg(readable_base.path()),
    );
    run_ok(Command::new("chmod").arg("-R").arg("a+rX").arg(readable_base.path()));
    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_fnbuild"),
            "build",
        ])
        .arg(unreadable.path())
        .args([
            "--runtime",
            "nodejs20",
            "--base",
            &format!("oci:{}:20", readable_base.path().display()),
        ]);
    let err = build_err(&mut as_nobody);
    assert!(err.contains("secret.txt") && err.contains("ermission denied"), "{err}");

    let err = build_err(&mut build_from(src.path(), "nodejs20", "oci:/nonexistent/layout:20"));
    assert!(err.contains("/nonexistent/layout is not an OCI image layout"), "{err}");
    let broken = temp_dir("broken-layout-");
    write(&broken.path().join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
    write(&broken.path().join("index.json"), "{\"manifests\": [");
    let err = build_err(&mut build_from(
        src.path(),
        "nodejs20",
        &format!("oci:{}", broken.path().display()),
    ));
    assert!(err.contains("index.json is malformed"), "{err}");
    let err = build_err(&mut build_from(
        src.path(),
        "nodejs20",
        &format!("oci:{}:nope", base_images().node.display()),
    ));
    assert!(
        err.contains("no image tagged 'nope'") && err.contains("tags: 20"),
        "{err}"
    );

    let err = build_err(&mut build(src.path(), "nodejs20").args(["--output", "docker-archive:/nonexistent/dir/x.tar"]));
    assert!(err.contains("/nonexistent/dir"), "{err}");
    let err = build_err(&mut build(src.path(), "nodejs20").args(["--output", "tarball:/tmp/x"]));
    // The message lists every form --output takes (all four transports since the formats split).
    assert!(
        err.contains("oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:NAME:TAG or docker://REF"),
        "{err}"
    );
}

#[test]
fn a_failed_build_leaves_an_existing_layout_valid_and_other_tags_are_kept() {
    let src = node_function();
    let out = temp_dir("out-");
    let layout = out.path().display().to_string();
    let first = build_ok(
        src.path(),
        "nodejs20",
        &node_base(),
        &["--output", &format!("oci:{layout}:one")],
    );
    let second_src = python_function();
    build_ok(
        second_src.path(),
        "python312",
        &python_base(),
        &["--output", &format!("oci:{layout}:two")],
    );
    let index_before = std::fs::read(out.path().join("index.json")).unwrap();

    let bad = node_function();
    symlink("/etc/shadow", bad.path().join("shadow")).unwrap();
    build_err(fnbuild().arg("build").arg(bad.path()).args([
        "--runtime",
        "nodejs20",
        "--base",
        &node_base(),
        "--output",
        &format!("oci:{layout}:one"),
    ]));
    assert_eq!(std::fs::read(out.path().join("index.json")).unwrap(), index_before);
    assert_eq!(skopeo_inspect(&format!("oci:{layout}:one"))["Digest"], first["digest"]);
    assert!(skopeo_inspect(&format!("oci:{layout}:two"))["Digest"].is_string());
    // skopeo copy reads every blob and checks its digest.
    let copy = temp_dir("copy-");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{layout}:one"),
        &format!("oci:{}:x", copy.path().display()),
    ]));
}

#[test]
fn json_output_describes_digests_layers_and_outputs() {
    let src = node_function();
    let out = temp_dir("out-");
    let digest_file = out.path().join("digest");
    let result = build_ok(
        src.path(),
        "nodejs20",
        &node_base(),
        &[
            "--output",
            &format!("oci:{}/layout:x", out.path().display()),
            "--digest-file",
            digest_file.to_str().unwrap(),
            "--source-url",
            "https://example.com/fn.git",
            "--revision",
            "abc123",
            "--label",
            "team=payments",
            "--annotation",
            "com.example.note=hi",
        ],
    );
    let digest = result["digest"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap(), digest);
    assert!(result["config_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        result["outputs"][0]["output"],
        format!("oci:{}/layout:x", out.path().display())
    );
    for layer in result["layers"].as_array().unwrap() {
        assert!(
            layer["size"].as_u64().unwrap() > 0 && layer["media_type"].is_string(),
            "{layer}"
        );
    }
    let manifest = skopeo_inspect_raw(&format!("oci:{}/layout:x", out.path().display()));
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.created"], "1970-01-01T00:00:01Z");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://example.com/fn.git"
    );
    assert_eq!(annotations["org.opencontainers.image.revision"], "abc123");
    assert_eq!(annotations["com.example.note"], "hi");
    let config = skopeo_inspect_config(&format!("oci:{}/layout:x", out.path().display()));
    assert_eq!(config["config"]["Labels"]["team"], "payments");
}
