//! A function's author is an attacker: sources that try to reach outside the function directory,
//! to loop, to smuggle credentials or to forge log lines are refused with one clear line and
//! nothing written; an accepted tree unpacks with no path leading out of the function directory.
//! Runs the real binary against the local test base images (no Docker daemon needed:
//! `FNBUILD_TEST_NO_DOCKER=1` is enough).

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const NODE_HELLO: &str = "module.exports = { main: function () { return \"Hello World!\"; } }\n";

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn function() -> tempfile::TempDir {
    let dir = temp_dir("fn-hostile-");
    write(&dir.path().join("handler.js"), NODE_HELLO);
    dir
}

/// Builds `src` into a fresh OCI layout, which must fail: returns its one `error:` line after
/// checking the exit code, that stderr has no other error line and no raw control character,
/// and that the layout got no index.json.
fn refused(src: &Path) -> String {
    let out_dir = temp_dir("out-");
    let out = fnbuild()
        .arg("build")
        .arg(src)
        .args(["--runtime", "nodejs20", "--base"])
        .arg(format!("oci:{}:{NODE_TAG}", base_images().node.display()))
        .arg("--output")
        .arg(format!("oci:{}:fn", out_dir.path().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "want exactly one error line: {stderr:?}");
    assert!(errors[0].starts_with("error: "), "{stderr:?}");
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control character reached stderr: {stderr:?}"
    );
    assert!(!out_dir.path().join("index.json").exists(), "something was written");
    errors[0].to_string()
}

#[test]
fn attack_trees_are_refused_with_one_line_and_nothing_written() {
    let two_step = function();
    std::fs::create_dir(two_step.path().join("sub")).unwrap();
    symlink("sub/..", two_step.path().join("y")).unwrap();
    symlink("y/..", two_step.path().join("z")).unwrap();
    let err = refused(two_step.path());
    assert!(err.contains("/z -> y/.. points outside the source directory"), "{err}");

    let through_up = function();
    std::fs::create_dir_all(through_up.path().join("a/b/c")).unwrap();
    symlink("../..", through_up.path().join("a/b/c/up")).unwrap();
    symlink("up/../../../../etc/passwd", through_up.path().join("a/b/c/esc")).unwrap();
    let err = refused(through_up.path());
    assert!(
        err.contains("a/b/c/esc -> up/../../../../etc/passwd points outside"),
        "{err}"
    );

    let looping = temp_dir("fn-loop-");
    symlink("handler.js", looping.path().join("handler.js")).unwrap();
    let err = refused(looping.path());
    assert!(
        err.contains("handler.js -> handler.js never resolves: it loops"),
        "{err}"
    );

    let outer = temp_dir("cm-outer-");
    write(&outer.path().join("elsewhere/handler.js"), NODE_HELLO);
    let mount = outer.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    symlink("..data/handler.js", mount.join("handler.js")).unwrap();
    for target in ["../elsewhere", "/etc"] {
        let _ = std::fs::remove_file(mount.join("..data"));
        symlink(target, mount.join("..data")).unwrap();
        let err = refused(&mount);
        assert!(
            err.contains(&format!(
                "..data -> {target}: a ConfigMap mount's ..data must point to a directory beside it"
            )),
            "{err}"
        );
    }

    let forged = function();
    let fifo = forged.path().join("x\nerror: build succeeded\x1b[2K");
    run_ok(std::process::Command::new("mkfifo").arg(&fifo));
    let err = refused(forged.path());
    assert!(
        err.contains("/x\\nerror: build succeeded\\x1b[2K is not a regular file"),
        "{err}"
    );
}

/// Every path below `dir` on disk, symlinks not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn an_accepted_tree_with_links_unpacks_with_nothing_leading_outside() {
    let src = function();
    let d = src.path();
    write(&d.join("lib/real/main.js"), "main");
    write(
        &d.join("config/package.json"),
        "{\"name\":\"h\",\"version\":\"1.0.0\",\"dependencies\":{}}\n",
    );
    symlink("config/package.json", d.join("package.json")).unwrap();
    symlink("real", d.join("lib/current")).unwrap();
    symlink("../lib/current/main.js", d.join("config/main")).unwrap();
    symlink("..", d.join("lib/up")).unwrap();
    symlink("up/lib/up/config/../handler.js", d.join("lib/deep")).unwrap();
    write(&d.join(".npmrc"), "//registry/:_authToken=secret");
    write(&d.join("keys/id_ed25519"), "secret");
    write(&d.join(".fnbuildignore"), "*.log\n");
    write(&d.join("debug.log"), "");

    let out = temp_dir("out-");
    let result = fnbuild()
        .arg("build")
        .arg(d)
        .args(["--runtime", "nodejs20", "--base"])
        .arg(format!("oci:{}:{NODE_TAG}", base_images().node.display()))
        .arg("--output")
        .arg(format!("oci:{}:fn", out.path().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("left out")).count(), 2, "{stderr}");

    let bundle = umoci_unpack(out.path(), "fn");
    let f = bundle
        .path()
        .join("rootfs/usr/src/app/function")
        .canonicalize()
        .unwrap();
    let mut paths = Vec::new();
    walk(&f, &mut paths);
    for p in &paths {
        let real = p.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(real.starts_with(&f), "{} resolves to {}", p.display(), real.display());
    }
    assert_eq!(std::fs::read_to_string(f.join("lib/deep")).unwrap(), NODE_HELLO);
    assert_eq!(std::fs::read_to_string(f.join("config/main")).unwrap(), "main");
    assert!(std::fs::symlink_metadata(f.join("package.json")).unwrap().is_file());
    for gone in [".npmrc", "keys/id_ed25519", ".fnbuildignore", "debug.log"] {
        assert!(
            std::fs::symlink_metadata(f.join(gone)).is_err(),
            "{gone} is in the image"
        );
    }
}
