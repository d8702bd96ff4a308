//! Each attack on `FunctionSource::load`, reproduced as an attacker would.

use super::*;
use crate::function::runtime::Runtimes;
use std::os::unix::fs::symlink;

fn node() -> Runtime {
    Runtimes::Embedded.load("nodejs20").unwrap()
}

fn paths(src: &FunctionSource) -> Vec<&str> {
    src.entries.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn a_directory_keeps_in_tree_symlinks_and_drops_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("handler.js"), "x").unwrap();
    std::fs::write(d.join(".npmrc"), "//registry/:_authToken=secret").unwrap();
    std::fs::create_dir_all(d.join("lib/.bin")).unwrap();
    std::fs::write(d.join("lib/tool.js"), "t").unwrap();
    symlink("../tool.js", d.join("lib/.bin/tool")).unwrap();
    let src = FunctionSource::load(d, &node()).unwrap();
    assert_eq!(
        paths(&src),
        ["handler.js", "lib", "lib/.bin", "lib/.bin/tool", "lib/tool.js"]
    );
    assert!(matches!(&src.entries[3].kind, EntryKind::Symlink { target } if target == "../tool.js"));
}

#[test]
fn symlinks_that_leave_the_tree_are_refused() {
    for target in ["../../etc/passwd", "/etc/passwd", "../sub/../../x"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handler.js"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        symlink(target, dir.path().join("sub/link")).unwrap();
        let err = FunctionSource::load(dir.path(), &node()).unwrap_err();
        assert!(matches!(err, SourceError::EscapingSymlink { .. }), "{target}: {err}");
    }
}

#[test]
fn a_missing_handler_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = FunctionSource::load(dir.path(), &node()).unwrap_err().to_string();
    assert!(err.starts_with("missing handler file handler.js in "), "{err}");
}

/// Lays out a directory the way the kubelet mounts a ConfigMap.
fn configmap(keys: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("..2026_11_25_10_00_00.123");
    std::fs::create_dir(&gen).unwrap();
    for (k, v) in keys {
        std::fs::write(gen.join(k), v).unwrap();
        symlink(format!("..data/{k}"), dir.path().join(k)).unwrap();
    }
    symlink("..2026_11_25_10_00_00.123", dir.path().join("..data")).unwrap();
    dir
}

#[test]
fn a_configmap_mount_maps_kyma_keys_to_the_runtime_files() {
    let dir = configmap(&[("source", "module.exports={}"), ("dependencies", "{}")]);
    let src = FunctionSource::load(dir.path(), &node()).unwrap();
    assert_eq!(paths(&src), ["handler.js", "package.json"]);
    assert!(src.dependency_file.is_some());
}

#[test]
fn configmap_keys_that_are_not_file_names_are_refused() {
    let dir = configmap(&[("handler.js", "x")]);
    std::fs::create_dir(dir.path().join("..data/sub")).unwrap();
    let err = FunctionSource::load(dir.path(), &node()).unwrap_err().to_string();
    assert!(err.starts_with("ConfigMap key 'sub/...'"), "{err}");

    let dir = configmap(&[("handler.js", "x")]);
    symlink("..data/../../../etc/passwd", dir.path().join("evil")).unwrap();
    let err = FunctionSource::load(dir.path(), &node()).unwrap_err().to_string();
    assert!(err.starts_with("ConfigMap key 'evil'"), "{err}");
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A directory function: `handler.js` and whatever `files` (path, content) it is given.
fn function(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("handler.js"), "module.exports = {}");
    for (path, content) in files {
        write(&dir.path().join(path), content);
    }
    dir
}

/// The refusal's message, checked to be one line.
fn refusal(dir: &Path) -> (SourceError, String) {
    let err = FunctionSource::load(dir, &node()).unwrap_err();
    let line = err.to_string();
    assert!(!line.chars().any(char::is_control), "not one clean line: {line:?}");
    (err, line)
}

#[test]
fn symlinks_that_escape_through_other_symlinks_are_refused() {
    // z -> y/.. where y -> sub/.. is the root: z is the root's parent.
    let dir = function(&[("sub/f", "")]);
    symlink("sub/..", dir.path().join("y")).unwrap();
    symlink("y/..", dir.path().join("z")).unwrap();
    let (err, line) = refusal(dir.path());
    assert!(matches!(err, SourceError::EscapingSymlink { .. }), "{line}");
    assert!(
        line.ends_with("/z -> y/.. points outside the source directory; copy the file in instead"),
        "{line}"
    );

    // a/b/c/esc -> up/../../../../etc/passwd, through up -> ../.. (that is a).
    let dir = function(&[("a/b/c/f", "")]);
    symlink("../..", dir.path().join("a/b/c/up")).unwrap();
    symlink("up/../../../../etc/passwd", dir.path().join("a/b/c/esc")).unwrap();
    let (err, line) = refusal(dir.path());
    assert!(
        matches!(&err, SourceError::EscapingSymlink { path, .. } if path.ends_with("a/b/c/esc")),
        "{line}"
    );
}

#[test]
fn looping_symlinks_are_refused_and_dangling_ones_inside_kept() {
    let dir = tempfile::tempdir().unwrap();
    symlink("handler.js", dir.path().join("handler.js")).unwrap();
    let (err, line) = refusal(dir.path());
    assert!(matches!(err, SourceError::LinkLoop { .. }), "{line}");
    assert!(line.ends_with("handler.js -> handler.js never resolves: it loops through more than 40 symlinks"));

    let dir = function(&[]);
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    assert!(matches!(refusal(dir.path()).0, SourceError::LinkLoop { .. }));

    let dir = function(&[("docs/x", "")]);
    symlink("../missing.md", dir.path().join("docs/readme")).unwrap();
    let src = FunctionSource::load(dir.path(), &node()).unwrap();
    assert!(paths(&src).contains(&"docs/readme"));
}

#[test]
fn a_configmap_data_link_must_name_a_directory_beside_it() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("elsewhere/handler.js"), "stolen");
    let mount = outside.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    symlink("..data/handler.js", mount.join("handler.js")).unwrap();
    symlink("../elsewhere", mount.join("..data")).unwrap();
    let (err, line) = refusal(&mount);
    assert!(matches!(err, SourceError::BadConfigMapData { .. }), "{line}");
    assert!(line.ends_with("/mount/..data -> ../elsewhere: a ConfigMap mount's ..data must point to a directory beside it (..<timestamp>)"), "{line}");

    for target in ["/etc", "..missing", "..", "..x/../../elsewhere"] {
        std::fs::remove_file(mount.join("..data")).unwrap();
        symlink(target, mount.join("..data")).unwrap();
        assert!(
            matches!(refusal(&mount).0, SourceError::BadConfigMapData { .. }),
            "{target}"
        );
    }
    // A ..<timestamp> that is itself a symlink out of the mount.
    std::fs::remove_file(mount.join("..data")).unwrap();
    symlink("../elsewhere", mount.join("..2026_11_25_10_00_00.123")).unwrap();
    symlink("..2026_11_25_10_00_00.123", mount.join("..data")).unwrap();
    assert!(matches!(refusal(&mount).0, SourceError::BadConfigMapData { .. }));
}

/// Runs `f` with the log captured; returns its result and the log lines.
fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text.lines().map(String::from).collect())
}

#[test]
fn credential_files_are_left_out_at_any_depth_with_one_warning_each() {
    let stores = [
        ".npmrc",
        ".netrc",
        ".pypirc",
        "pip.conf",
        "pip.ini",
        ".git-credentials",
        ".yarnrc",
        ".yarnrc.yml",
        "lib/.aws/credentials",
        ".kube/config",
        ".docker/config.json",
        ".gnupg/secring.gpg",
        "deep/er/.ssh/known_hosts",
        "keys/id_rsa",
        "keys/id_rsa.pub",
        "id_ed25519",
        "id_ecdsa_work",
        "id_dsa",
    ];
    let mut files: Vec<(&str, &str)> = stores.iter().map(|s| (*s, "secret")).collect();
    files.extend([(".env", "A=1"), ("credentials.json", "{}"), ("keys/readme", "")]);
    let dir = function(&files);
    let (src, log) = logged(|| FunctionSource::load(dir.path(), &node()).unwrap());
    assert_eq!(
        paths(&src),
        [
            ".env",
            "credentials.json",
            "deep",
            "deep/er",
            "handler.js",
            "keys",
            "keys/readme",
            "lib"
        ]
    );
    let warnings: Vec<_> = log.iter().filter(|l| l.contains("WARN")).collect();
    // A directory store is one warning, not one per file in it.
    assert_eq!(warnings.len(), stores.len(), "{log:#?}");
    for s in stores {
        let top = ["lib/.aws", ".kube", ".docker", ".gnupg", "deep/er/.ssh"]
            .into_iter()
            .find(|d| s.starts_with(d))
            .unwrap_or(s);
        let shown = format!("left out {}: credential", dir.path().join(top).display());
        assert_eq!(
            warnings.iter().filter(|w| w.contains(&shown)).count(),
            1,
            "{shown}: {log:#?}"
        );
        assert!(!warnings.iter().any(|w| w.contains("secret")));
    }

    let keys: Vec<(&str, &str)> = [".npmrc", ".netrc", ".pypirc", "pip.conf", "id_rsa"]
        .iter()
        .map(|k| (*k, "secret"))
        .chain([("source", "x")])
        .collect();
    let mount = configmap(&keys);
    let (src, log) = logged(|| FunctionSource::load(mount.path(), &node()).unwrap());
    assert_eq!(paths(&src), ["handler.js"]);
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("WARN") && l.contains("left out"))
            .count(),
        5
    );
}

#[test]
fn the_ignore_file_leaves_out_what_it_names_and_itself() {
    let dir = function(&[
        (
            ".fnbuildignore",
            "# local only\n*.log\n/build/\n**/test/**\n!test/keep.js\n",
        ),
        ("app.log", ""),
        ("lib/app.log", ""),
        ("build/out.js", ""),
        ("lib/test/a.js", ""),
        ("test/keep.js", ""),
        ("test/drop.js", ""),
    ]);
    let src = FunctionSource::load(dir.path(), &node()).unwrap();
    assert_eq!(
        paths(&src),
        ["handler.js", "lib", "lib/app.log", "test", "test/keep.js"]
    );

    // An ignored directory is not read at all: a FIFO there is no error.
    let dir = function(&[(".fnbuildignore", "tmp\n")]);
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(dir.path().join("tmp/pipe"))
        .status()
        .unwrap()
        .success());
    assert_eq!(
        paths(&FunctionSource::load(dir.path(), &node()).unwrap()),
        ["handler.js"]
    );

    let dir = function(&[(".fnbuildignore", "*.js\n")]);
    let (err, line) = refusal(dir.path());
    assert!(matches!(err, SourceError::IgnoredHandler { .. }), "{line}");
    assert!(
        line.ends_with(".fnbuildignore leaves out the handler file handler.js: the runtime loads the function from it")
    );

    // Read only as a regular file: never a host file through a symlink.
    let dir = function(&[]);
    symlink("/etc/passwd", dir.path().join(".fnbuildignore")).unwrap();
    assert!(matches!(refusal(dir.path()).0, SourceError::BadIgnoreFile { .. }));

    let mount = configmap(&[("source", "x"), ("notes.md", ""), (".fnbuildignore", "*.md")]);
    assert_eq!(
        paths(&FunctionSource::load(mount.path(), &node()).unwrap()),
        ["handler.js"]
    );
}

#[test]
fn handler_and_dependency_file_symlinks_are_read_through() {
    let dir = function(&[
        ("src/main.js", "module.exports = {}"),
        ("config/package.json", r#"{"dependencies":{"left-pad":"1.3.0"}}"#),
    ]);
    std::fs::remove_file(dir.path().join("handler.js")).unwrap();
    symlink("src/main.js", dir.path().join("handler.js")).unwrap();
    symlink("config/package.json", dir.path().join("package.json")).unwrap();
    let src = FunctionSource::load(dir.path(), &node()).unwrap();
    let file_at = |p: &str| match &src.entries.iter().find(|e| e.path == p).unwrap().kind {
        EntryKind::File {
            content: Content::Path(real),
            ..
        } => real.clone(),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(file_at("handler.js"), dir.path().join("src/main.js"));
    assert_eq!(file_at("package.json"), dir.path().join("config/package.json"));
    assert_eq!(src.dependency_file, Some(dir.path().join("config/package.json")));
    let plan = crate::function::dependencies::plan(&src, &node())
        .unwrap()
        .expect("a plan");
    assert_eq!(plan.packages, 1);

    // To a directory, or to nothing: refused, since the image would not start or install.
    for (target, role) in [("src", "handler file"), ("nothing.js", "handler file")] {
        std::fs::remove_file(dir.path().join("handler.js")).unwrap();
        symlink(target, dir.path().join("handler.js")).unwrap();
        let (err, line) = refusal(dir.path());
        assert!(matches!(err, SourceError::NotAFile { .. }), "{line}");
        assert!(
            line.ends_with(&format!(
                "handler.js -> {target} does not lead to a file in the source directory; the {role} must be a file"
            )),
            "{line}"
        );
    }
    std::fs::remove_file(dir.path().join("handler.js")).unwrap();
    symlink("src/main.js", dir.path().join("handler.js")).unwrap();
    std::fs::remove_file(dir.path().join("package.json")).unwrap();
    symlink("config", dir.path().join("package.json")).unwrap();
    assert!(refusal(dir.path()).1.ends_with("the dependency file must be a file"));
}

#[test]
fn names_in_errors_have_their_control_characters_escaped() {
    let dir = function(&[]);
    let fifo = dir.path().join("x\nerror: all good\x1b[2J");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (err, line) = refusal(dir.path());
    assert!(matches!(err, SourceError::SpecialFile { .. }), "{line}");
    assert!(
        line.ends_with("/x\\nerror: all good\\x1b[2J is not a regular file, directory or symlink"),
        "{line}"
    );

    let dir = function(&[]);
    symlink("\x1b]0;owned\x07/../../..", dir.path().join("l\tink")).unwrap();
    let line = refusal(dir.path()).1;
    assert!(
        line.contains("/l\\tink -> \\x1b]0;owned\\x07/../../.. points outside"),
        "{line}"
    );

    use std::os::unix::ffi::OsStrExt;
    let dir = function(&[]);
    write(&dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9\r.js")), "");
    let (err, line) = refusal(dir.path());
    assert!(matches!(err, SourceError::NotUtf8 { .. }), "{line}");
    assert!(
        line.ends_with("/caf\\xe9\\r.js: file name is not valid UTF-8"),
        "{line}"
    );

    let mount = configmap(&[("source", "x")]);
    std::fs::write(mount.path().join("..data/bad\nkey"), "").unwrap();
    symlink("..data/bad\nkey", mount.path().join("bad\nkey")).unwrap();
    assert!(refusal(mount.path()).1.starts_with("ConfigMap key 'bad\\nkey'"));
}
