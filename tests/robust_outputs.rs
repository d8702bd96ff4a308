//! Outputs written safely (issue 18): into devices, FIFOs and stdout rather than over them; OCI
//! layouts only into empty directories or layouts, with every tag kept when builds race; files
//! readable by others; targets checked before any work; no panic on odd index.json files or
//! timestamps.

mod common;

use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn function() -> tempfile::TempDir {
    let dir = temp_dir("robust-fn-");
    std::fs::write(
        dir.path().join("handler.js"),
        "module.exports = { main: () => 'robust' };\n",
    )
    .unwrap();
    dir
}

fn base() -> String {
    format!("oci:{}", base_images().node_layout_for("24").display())
}

/// `fnbuild build SRC --runtime nodejs24 --base B ARGS...`, its output.
fn build(src: &Path, args: &[&str]) -> Output {
    fnbuild()
        .arg("build")
        .arg(src)
        .args(["--runtime", "nodejs24", "--base", &base(), "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Exit code and the one error line (the whole of stderr).
fn failure(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (out.status.code().unwrap(), stderr)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; makes a character device node in a private directory.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
    assert_eq!(rc, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

#[test]
fn an_archive_goes_into_a_device_or_stdout_and_the_device_stays() {
    setup();
    let src = function();
    if is_root() {
        // Private copies of /dev/null and /dev/full: the machine's own are never touched.
        let devices = temp_dir("robust-dev-");
        let (null, full) = (devices.path().join("null"), devices.path().join("full"));
        mknod(&null, 1, 3);
        mknod(&full, 1, 7);
        let out = build(src.path(), &["--output", &format!("docker-archive:{}", null.display())]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = build(src.path(), &["--output", &format!("docker-archive:{}", full.display())]);
        let (code, line) = failure(&out);
        assert_eq!(code, 1);
        assert!(
            line.contains("No space left on device") && line.contains(&full.display().to_string()),
            "{line}"
        );
        for dev in [&null, &full] {
            assert!(
                std::fs::metadata(dev).unwrap().file_type().is_char_device(),
                "{} replaced",
                dev.display()
            );
        }
    } else {
        eprintln!("not root: the device cases need mknod; the stdout case runs");
    }

    // `fnbuild … --output docker-archive:/dev/stdout | docker load`: the image arrives whole.
    let name = format!("fnbuild-tests/robust-stdout:{}", std::process::id());
    let mut fnbuild_cmd = fnbuild();
    fnbuild_cmd
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs24", "--base", &base(), "--quiet", "--output"])
        .arg(format!("docker-archive:/dev/stdout:{name}"))
        .stdout(Stdio::piped());
    let mut producer = fnbuild_cmd.spawn().unwrap();
    let load = docker()
        .arg("load")
        .stdin(producer.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(producer.wait().unwrap().success());
    let loaded = String::from_utf8_lossy(&load.stdout);
    assert!(
        load.status.success() && loaded.contains(&name),
        "{loaded}{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let c = docker_run_detached(&name, &["--read-only", "--user", "1000"]);
    assert_eq!(http_get(&format!("{}/", c.url())).2, "robust");
    drop(c);
    let _ = docker().args(["rmi", &name]).output();

    // Both the archive and the result on stdout: refused before anything is built.
    let out = Command::new(env!("CARGO_BIN_EXE_fnbuild"))
        .arg("build")
        .arg(src.path())
        .args([
            "--runtime",
            "nodejs24",
            "--base",
            &base(),
            "--json",
            "--output",
            "docker-archive:/dev/stdout",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let (code, line) = failure(&out);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("--json and an output to stdout"), "{line}");
    assert!(out.stdout.is_empty());
}

#[test]
fn builds_racing_into_one_layout_keep_every_tag() {
    setup();
    let layout = temp_dir("robust-layout-");
    let sources: Vec<_> = (0..10)
        .map(|i| {
            let dir = function();
            std::fs::write(dir.path().join("n.js"), format!("exports.n = {i};\n")).unwrap();
            dir
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            fnbuild()
                .arg("build")
                .arg(src.path())
                .args(["--runtime", "nodejs24", "--base", &base(), "--quiet", "--output"])
                .arg(format!("oci:{}:t{i}", layout.path().display()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tags.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(tags, want);
    for tag in &want {
        skopeo_inspect(&format!("oci:{}:{tag}", layout.path().display()));
    }
    // Readable by other users and tools (0644 under the usual umask), like any tool's output.
    for path in [layout.path().join("index.json"), layout.path().join("oci-layout")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{}: {mode:o}", path.display());
    }
    for blob in std::fs::read_dir(layout.path().join("blobs/sha256")).unwrap() {
        let mode = blob.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{mode:o}");
    }
}

#[test]
fn a_layout_goes_only_into_an_empty_directory_or_a_layout_and_targets_are_checked_first() {
    setup();
    let src = function();
    // Some other directory: refused, untouched.
    let other = temp_dir("robust-other-");
    std::fs::write(other.path().join("notes.txt"), "mine").unwrap();
    let out = build(src.path(), &["--output", &format!("oci:{}:x", other.path().display())]);
    let (code, line) = failure(&out);
    assert_eq!(code, 1);
    assert!(line.contains("neither empty nor an OCI layout"), "{line}");
    let names: Vec<_> = std::fs::read_dir(other.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);

    // A layout whose index.json is not an index: one line, no panic, nothing added.
    for bad in ["[]", "\"x\"", "42", "{\"manifests\": 1}", "{"] {
        let layout = temp_dir("robust-badindex-");
        std::fs::write(layout.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(layout.path().join("index.json"), bad).unwrap();
        let out = build(src.path(), &["--output", &format!("oci:{}:x", layout.path().display())]);
        let (code, line) = failure(&out);
        assert_eq!(code, 1, "{bad}: {line}");
        assert!(
            line.contains("index.json") && line.contains("not touching it"),
            "{bad}: {line}"
        );
        assert!(!layout.path().join("blobs").exists(), "{bad}: blobs written");
        assert_eq!(std::fs::read_to_string(layout.path().join("index.json")).unwrap(), bad);
    }

    // An unwritable digest file, or an archive in a missing directory: found before any
    // output is written.
    let outdir = temp_dir("robust-out-");
    let layout = outdir.path().join("layout");
    let out = build(
        src.path(),
        &[
            "--output",
            &format!("oci:{}:x", layout.display()),
            "--digest-file",
            "/nonexistent-fnbuild-dir/digest",
        ],
    );
    let (code, line) = failure(&out);
    assert_eq!(code, 1);
    assert!(
        line.contains("cannot write the digest to /nonexistent-fnbuild-dir/digest"),
        "{line}"
    );
    assert!(
        !layout.exists(),
        "the layout was written before the digest file was found unwritable"
    );
    let out = build(
        src.path(),
        &[
            "--output",
            &format!("oci:{}:x", layout.display()),
            "--output",
            "docker-archive:/nonexistent-fnbuild-dir/a.tar",
        ],
    );
    let (code, line) = failure(&out);
    assert_eq!(code, 1);
    assert!(
        line.contains("the directory /nonexistent-fnbuild-dir does not exist"),
        "{line}"
    );
    assert!(!layout.exists());
}

#[test]
fn timestamps_past_the_year_9999_are_refused_in_one_line() {
    setup();
    let src = function();
    for value in ["18446744073709551615", "1000000000000000", "253402300800"] {
        let out = fnbuild()
            .env("SOURCE_DATE_EPOCH", value)
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs24", "--base", &base()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: invalid value '{value}'")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The last second of 9999 builds, and other tools read it.
    let layout = temp_dir("robust-late-");
    let out = build(
        src.path(),
        &[
            "--source-date-epoch",
            "253402300799",
            "--output",
            &format!("oci:{}:late", layout.path().display()),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspected = skopeo_inspect(&format!("oci:{}:late", layout.path().display()));
    assert_eq!(inspected["Created"], "9999-12-31T23:59:59Z");
    umoci_unpack(layout.path(), "late");
}

#[test]
fn a_damaged_base_layer_in_a_layout_fails_every_output_and_leaves_nothing() {
    setup();
    let src = function();
    let bases = temp_dir("robust-badbase-");
    let layout = bases.path().join("node");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(base_images().node_layout_for("24"))
            .arg(&layout),
    );
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();

    let out_dir = temp_dir("robust-badbase-out-");
    let archive = out_dir.path().join("image.tar");
    let new_layout = out_dir.path().join("layout");
    for output in [
        format!("docker-archive:{}", archive.display()),
        format!("oci:{}:x", new_layout.display()),
    ] {
        let out = fnbuild()
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs24", "--quiet", "--base"])
            .arg(format!("oci:{}", layout.display()))
            .args(["--output", &output])
            .output()
            .unwrap();
        let (code, line) = failure(&out);
        assert_eq!(code, 1, "{output}: {line}");
        assert!(line.contains("it is damaged or was altered"), "{output}: {line}");
    }
    assert!(!archive.exists(), "no archive");
    assert!(!new_layout.exists(), "no half layout");
}

#[test]
fn the_daemon_named_by_docker_host_or_a_docker_context_is_the_one_used() {
    setup();
    let src = function();
    let port = free_port(); // nothing listens there
    let load = |env: &[(&str, String)], name: &str| {
        let mut cmd = fnbuild();
        cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // A label of its own: the other daemon test loads the same function and then removes its
        // tag, which, on an image of the same ID loading here at that moment, would take it away.
        cmd.arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs24", "--base", &base(), "--quiet", "--load", name])
            .args(["--label", "fnbuild.test=docker-context"])
            .output()
            .unwrap()
    };
    let out = load(
        &[("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))],
        "fnbuild-tests/dh:1",
    );
    let (code, line) = failure(&out);
    assert_eq!(code, 1);
    assert!(
        line.contains(&format!("the Docker daemon at tcp://127.0.0.1:{port} (DOCKER_HOST)")),
        "{line}"
    );

    // A Docker context, as `docker context create` writes it: the CLI's currentContext.
    let config = temp_dir("robust-docker-config-");
    let context_meta = |name: &str, host: &str| {
        use sha2::Digest;
        let dir = config
            .path()
            .join("contexts/meta")
            .join(hex::encode(sha2::Sha256::digest(name.as_bytes())));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}});
        std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    };
    context_meta("here", "unix:///var/run/docker.sock");
    context_meta("gone", "unix:///nonexistent-fnbuild/docker.sock");
    std::fs::write(config.path().join("config.json"), r#"{"currentContext": "here"}"#).unwrap();
    let docker_config = config.path().display().to_string();
    let name = format!("fnbuild-tests/context:{}", std::process::id());
    let out = load(&[("DOCKER_CONFIG", docker_config.clone())], &name);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(docker()
        .args(["image", "inspect", &name])
        .output()
        .unwrap()
        .status
        .success());
    let _ = docker().args(["rmi", &name]).output();
    let out = load(
        &[("DOCKER_CONFIG", docker_config), ("DOCKER_CONTEXT", "gone".into())],
        &name,
    );
    let (code, line) = failure(&out);
    assert_eq!(code, 1);
    assert!(
        line.contains("unix:///nonexistent-fnbuild/docker.sock (Docker context 'gone')"),
        "{line}"
    );
}

#[test]
fn scratch_space_goes_with_every_build_and_what_killed_builds_left_is_swept() {
    setup();
    let src = function();
    let tmp = temp_dir("robust-tmpdir-");
    // What a killed build leaves: its directory, with a partly written layer, an hour old.
    let left = tmp.path().join("fnbuild-build-killed1");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("function-layer"), vec![0u8; 1 << 20]).unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&left).unwrap().set_modified(hour_ago).unwrap();
    let scratch = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("fnbuild-build-"))
            .collect()
    };
    let out_dir = temp_dir("robust-scratch-out-");
    for (args, ok) in [
        (
            vec![
                "--base".to_string(),
                base(),
                "--output".to_string(),
                format!("oci:{}:a", out_dir.path().join("l").display()),
            ],
            true,
        ),
        // A failing build cleans up too.
        (
            vec!["--base".to_string(), "oci:/nonexistent-fnbuild-base".to_string()],
            false,
        ),
    ] {
        let out = fnbuild()
            .env("TMPDIR", tmp.path())
            .arg("build")
            .arg(src.path())
            .args(["--runtime", "nodejs24", "--quiet"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{stderr}");
        assert!(ok || stderr.contains("nonexistent-fnbuild-base"), "{stderr}");
        assert!(scratch().is_empty(), "left behind: {:?}", scratch());
    }
}
