//! A function's source: a plain directory, or a Kubernetes ConfigMap volume mount
//! (`key -> ..data/key`, `..data -> ..<timestamp>/`), turned into the entries of the function layer.
//!
//! The function's author may be an attacker: nothing from outside the source may reach the
//! image (symlinks are resolved as the image will resolve them, see [`super::links`]),
//! credential files are left out, and every name printed is escaped ([`crate::text`]).

use super::ignore::{Ignore, IGNORE_FILE};
use super::links::{LinkError, LinkProblem, Node, Tree};
use super::runtime::Runtime;
use crate::image::layer::{Content, EntryKind};
use crate::text::{escape_control, escape_path};
use std::path::{Component, Path, PathBuf};

/// One file, directory or symlink of the function, relative to the function directory.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone)]
pub struct FunctionSource {
    pub root: PathBuf,
    pub entries: Vec<SourceEntry>,
    /// The dependency file's path on disk, if the function has one (a symlink's real file).
    pub dependency_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source directory {} does not exist or is not a directory", escape_path(.0))]
    NotADirectory(PathBuf),
    #[error("cannot read {}: {source}", escape_path(path))]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: file name is not valid UTF-8", escape_path(path))]
    NotUtf8 { path: PathBuf },
    #[error(
        "symlink {} -> {} points outside the source directory; copy the file in instead",
        escape_path(path),
        escape_control(target)
    )]
    EscapingSymlink { path: PathBuf, target: String },
    #[error(
        "symlink {} -> {} never resolves: it loops through more than 40 symlinks",
        escape_path(path),
        escape_control(target)
    )]
    LinkLoop { path: PathBuf, target: String },
    #[error(
        "symlink {} -> {} does not lead to a file in the source directory; the {role} must be a file",
        escape_path(path),
        escape_control(target)
    )]
    NotAFile {
        path: PathBuf,
        target: String,
        role: &'static str,
    },
    #[error("{} is not a regular file, directory or symlink", escape_path(path))]
    SpecialFile { path: PathBuf },
    #[error(
        "ConfigMap key '{}' in {} is not a plain file name (no '/' and no '..'); use keys like handler.js",
        escape_control(key),
        escape_path(root)
    )]
    BadConfigMapKey { root: PathBuf, key: String },
    #[error("{} -> {}: a ConfigMap mount's ..data must point to a directory beside it (..<timestamp>)",
        escape_path(&root.join("..data")), escape_path(target))]
    BadConfigMapData { root: PathBuf, target: PathBuf },
    #[error("{} must be a regular file", escape_path(path))]
    BadIgnoreFile { path: PathBuf },
    #[error(
        "{} leaves out the handler file {}: the runtime loads the function from it",
        escape_path(ignore_file),
        escape_control(file)
    )]
    IgnoredHandler { ignore_file: PathBuf, file: String },
    #[error(
        "missing handler file {} in {}: the {runtime} runtime loads the function from it",
        escape_control(file),
        escape_path(root)
    )]
    MissingHandler {
        root: PathBuf,
        file: String,
        runtime: String,
    },
}

/// Left out silently, at any depth: version control and what the build makes itself.
const EXCLUDED: &[&str] = &[".git", "__pycache__", "node_modules"];

/// Credential stores, left out at any depth with a warning, in a directory and in a ConfigMap.
/// A trailing `*` matches any ending (`id_rsa.pub`, `id_ed25519_work`). Files with
/// credentials for the install are given with `--npmrc` / `--pip-conf`, never from the source.
const CREDENTIALS: &[&str] = &[
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".netrc",
    "_netrc",
    ".pypirc",
    "pip.conf",
    "pip.ini",
    ".git-credentials",
    ".pgpass",
    ".dockercfg",
    ".docker",
    ".aws",
    ".azure",
    ".kube",
    ".ssh",
    ".gnupg",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
];

/// Whether a file or directory name is a credential store (see [`CREDENTIALS`]).
pub fn is_credential(name: &str) -> bool {
    CREDENTIALS.iter().any(|c| match c.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *c,
    })
}

fn skip_credential(path: &Path) {
    tracing::warn!(
        "left out {}: credential files are never copied into an image",
        escape_path(path)
    );
}

impl FunctionSource {
    pub fn load(root: &Path, runtime: &Runtime) -> Result<FunctionSource, SourceError> {
        if !root.is_dir() {
            return Err(SourceError::NotADirectory(root.to_path_buf()));
        }
        let spec = &runtime.spec;
        // Any `..data` entry, even a dangling symlink, means a mount: it is checked there.
        let (mut entries, ignore) = if std::fs::symlink_metadata(root.join("..data")).is_ok() {
            load_configmap(root, runtime)?
        } else {
            let ignore = read_ignore(root)?;
            (load_directory(root, &ignore)?, ignore)
        };
        if ignore.is_ignored(&spec.handler_file, false) {
            return Err(SourceError::IgnoredHandler {
                ignore_file: root.join(IGNORE_FILE),
                file: spec.handler_file.clone(),
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        super::links::check_links(entries.iter().map(|e| (e.path.as_str(), &e.kind)))
            .map_err(|e| link_error(root, e))?;
        read_through(root, &mut entries, &spec.handler_file, "handler file")?;
        read_through(root, &mut entries, &spec.dependency_file, "dependency file")?;
        if !entries
            .iter()
            .any(|e| e.path == spec.handler_file && matches!(e.kind, EntryKind::File { .. }))
        {
            return Err(SourceError::MissingHandler {
                root: root.to_path_buf(),
                file: spec.handler_file.clone(),
                runtime: runtime.name.clone(),
            });
        }
        let dependency_file = entries
            .iter()
            .find(|e| e.path == spec.dependency_file)
            .and_then(|e| match &e.kind {
                EntryKind::File {
                    content: Content::Path(p),
                    ..
                } => Some(p.clone()),
                _ => None,
            });
        Ok(FunctionSource {
            root: root.to_path_buf(),
            entries,
            dependency_file,
        })
    }
}

fn link_error(root: &Path, e: LinkError) -> SourceError {
    let path = root.join(&e.path);
    match e.problem {
        LinkProblem::Absolute | LinkProblem::Outside => SourceError::EscapingSymlink { path, target: e.target },
        LinkProblem::Loop => SourceError::LinkLoop { path, target: e.target },
    }
}

/// A handler or dependency file that is a symlink becomes a file with its target's content:
/// the runtime and the installer read it through the link anyway, and the dependency plan (and
/// `dependency_file`) need the file itself. Its links are already checked to stay inside.
fn read_through(root: &Path, entries: &mut [SourceEntry], file: &str, role: &'static str) -> Result<(), SourceError> {
    let Some(i) = entries.iter().position(|e| e.path == file) else {
        return Ok(());
    };
    let EntryKind::Symlink { target } = &entries[i].kind else {
        return Ok(());
    };
    let tree = Tree::new(entries.iter().map(|e| (e.path.as_str(), &e.kind)));
    let real = match tree.resolve(file) {
        Ok(Some((real, Node::File))) => entries.iter().find(|e| e.path == real).map(|e| e.kind.clone()),
        _ => None,
    };
    match real {
        Some(kind) => {
            entries[i].kind = kind;
            Ok(())
        }
        None => Err(SourceError::NotAFile {
            path: root.join(file),
            target: target.clone(),
            role,
        }),
    }
}

/// The root's `.fnbuildignore`, if any; only a regular file is read (no host file through a link).
fn read_ignore(root: &Path) -> Result<Ignore, SourceError> {
    let path = root.join(IGNORE_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
        Err(source) => Err(SourceError::Read { path, source }),
        Ok(m) if !m.is_file() => Err(SourceError::BadIgnoreFile { path }),
        Ok(_) => read_ignore_file(&path),
    }
}

fn read_ignore_file(path: &Path) -> Result<Ignore, SourceError> {
    let text = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.into(),
        source,
    })?;
    Ok(Ignore::parse(&String::from_utf8_lossy(&text)))
}

fn load_directory(root: &Path, ignore: &Ignore) -> Result<Vec<SourceEntry>, SourceError> {
    let mut entries = Vec::new();
    let mut walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|e| SourceError::Read {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        let rel = item.path().strip_prefix(root).expect("walk stays below its root");
        let path = rel
            .to_str()
            .ok_or_else(|| SourceError::NotUtf8 {
                path: item.path().into(),
            })?
            .to_string();
        let ft = item.file_type();
        let name = item.file_name().to_str().unwrap_or_default();
        let skip = if EXCLUDED.contains(&name) || (item.depth() == 1 && name == IGNORE_FILE) {
            true
        } else if is_credential(name) {
            skip_credential(item.path());
            true
        } else {
            ignore.is_ignored(&path, ft.is_dir())
        };
        if skip {
            // Below an ignored directory, a `!` pattern may take some paths back.
            if ft.is_dir() && (EXCLUDED.contains(&name) || is_credential(name) || !ignore.has_negations()) {
                walk.skip_current_dir();
            }
            continue;
        }
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File {
                content: Content::Path(item.path().into()),
                executable: is_executable(item.path())?,
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|source| SourceError::Read {
                path: item.path().into(),
                source,
            })?;
            let target = target.to_str().ok_or_else(|| SourceError::NotUtf8 {
                path: item.path().into(),
            })?;
            EntryKind::Symlink { target: target.into() }
        } else {
            return Err(SourceError::SpecialFile {
                path: item.path().into(),
            });
        };
        entries.push(SourceEntry { path, kind });
    }
    add_parents(&mut entries);
    Ok(entries)
}

/// The directories above kept entries, when an ignored directory had paths taken back.
fn add_parents(entries: &mut Vec<SourceEntry>) {
    let have: std::collections::HashSet<String> = entries.iter().map(|e| e.path.clone()).collect();
    let mut missing = std::collections::BTreeSet::new();
    for e in entries.iter() {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !have.contains(parent) {
                missing.insert(parent.to_string());
            }
            p = parent;
        }
    }
    entries.extend(missing.into_iter().map(|path| SourceEntry {
        path,
        kind: EntryKind::Dir,
    }));
}

/// The directory a mount's `..data` names: a sibling `..<timestamp>` directory, as the kubelet
/// writes it (or `..data` itself when it is a real directory: that too is inside the mount).
fn configmap_data(root: &Path) -> Result<PathBuf, SourceError> {
    let data = root.join("..data");
    let read_err = |source| SourceError::Read {
        path: data.clone(),
        source,
    };
    let meta = std::fs::symlink_metadata(&data).map_err(read_err)?;
    if meta.is_dir() {
        return Ok(data);
    }
    let target = if meta.is_symlink() {
        std::fs::read_link(&data).map_err(read_err)?
    } else {
        PathBuf::new()
    };
    let sibling = target
        .to_str()
        .is_some_and(|t| t.len() > 2 && t.starts_with("..") && !t.contains('/'));
    let gen = root.join(&target);
    if sibling && std::fs::symlink_metadata(&gen).is_ok_and(|m| m.is_dir()) {
        Ok(gen)
    } else {
        Err(SourceError::BadConfigMapData {
            root: root.into(),
            target,
        })
    }
}

/// A ConfigMap mount: every visible entry is a key, read through its symlink into `..data`.
/// Kyma's keys `source` and `dependencies` become the runtime's handler and dependency files.
fn load_configmap(root: &Path, runtime: &Runtime) -> Result<(Vec<SourceEntry>, Ignore), SourceError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Read { path, source }
    };
    let data = configmap_data(root)?;
    let data_real = data.canonicalize().map_err(read_err(&data))?;
    let mut entries = Vec::new();
    let mut ignore = Ignore::default();
    for item in std::fs::read_dir(root).map_err(read_err(root))? {
        let item = item.map_err(read_err(root))?;
        let name = item.file_name();
        let key = name
            .to_str()
            .ok_or_else(|| SourceError::NotUtf8 { path: item.path() })?;
        if key.starts_with("..") {
            continue; // the mount's own bookkeeping: ..data, ..2026_11_25_...
        }
        if is_credential(key) {
            skip_credential(&item.path());
            continue;
        }
        let bad_key = || SourceError::BadConfigMapKey {
            root: root.into(),
            key: key.into(),
        };
        if !is_configmap_key(key) {
            return Err(bad_key());
        }
        // The key's file must be inside the current ..data generation, as the kubelet writes it.
        let real = item.path().canonicalize().map_err(read_err(&item.path()))?;
        if real.parent() != Some(data_real.as_path()) {
            return Err(bad_key());
        }
        let meta = std::fs::metadata(&real).map_err(read_err(&item.path()))?;
        if !meta.is_file() {
            return Err(bad_key());
        }
        if key == IGNORE_FILE {
            ignore = read_ignore_file(&real)?;
            continue;
        }
        let spec = &runtime.spec;
        let path = match key {
            k if k == spec.source_key => spec.handler_file.clone(),
            k if k == spec.dependencies_key => spec.dependency_file.clone(),
            k => k.to_string(),
        };
        entries.push(SourceEntry {
            path,
            kind: EntryKind::File {
                content: Content::Path(real.clone()),
                executable: is_executable(&real)?,
            },
        });
    }
    // Keys with '/' (volume `items` paths) appear as directories inside ..data.
    for item in std::fs::read_dir(&data_real).map_err(read_err(&data_real))? {
        let item = item.map_err(read_err(&data_real))?;
        if item.file_type().map_err(read_err(&item.path()))?.is_dir() {
            return Err(SourceError::BadConfigMapKey {
                root: root.into(),
                key: format!("{}/...", item.file_name().to_string_lossy()),
            });
        }
    }
    if entries.iter().filter(|e| e.path == runtime.spec.handler_file).count() > 1
        || entries
            .iter()
            .filter(|e| e.path == runtime.spec.dependency_file)
            .count()
            > 1
    {
        return Err(SourceError::BadConfigMapKey {
            root: root.into(),
            key: runtime.spec.source_key.clone(),
        });
    }
    entries.retain(|e| !ignore.is_ignored(&e.path, false));
    Ok((entries, ignore))
}

/// Kubernetes' rule for ConfigMap keys.
fn is_configmap_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && !key.starts_with("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Whether a relative symlink at `link` (relative to the root) resolves to a path below the root,
/// read lexically, on its own. Links through other links of the tree: [`super::links::check_links`].
pub(crate) fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn is_executable(path: &Path) -> Result<bool, SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SourceError::Read {
        path: path.into(),
        source,
    })?;
    Ok(meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
#[path = "source_props.rs"]
mod props;

#[cfg(test)]
mod tests {
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
        assert!(line.ends_with(
            ".fnbuildignore leaves out the handler file handler.js: the runtime loads the function from it"
        ));

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
}
