//! A function's source: a plain directory, or a Kubernetes ConfigMap volume mount
//! (`key -> ..data/key`, `..data -> ..<timestamp>/`), turned into the entries of the function layer.
//!
//! The function's author may be an attacker: nothing from outside the source may reach the
//! image (symlinks are resolved as the image will resolve them, see [`super::links`]),
//! credential files are left out, and every name printed is escaped ([`crate::text`]).

use super::ignore::{Ignore, IGNORE_FILE};
use super::links::{LinkError, LinkProblem, Node, Tree};
use super::runtime::Runtime;
use crate::oci::layer::{Content, EntryKind};
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
    super::fs::is_executable(path).map_err(|source| SourceError::Read {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
#[path = "source_props.rs"]
mod props;

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
