//! A function's source: a plain directory, or a Kubernetes ConfigMap volume mount
//! (`key -> ..data/key`, `..data -> ..<timestamp>/`), turned into the entries of the function layer.

use super::runtime::Runtime;
use crate::image::layer::{Content, EntryKind};
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
    /// The dependency file's path on disk, if the function has one.
    pub dependency_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source directory {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: file name is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("symlink {path} -> {target} points outside the source directory; copy the file in instead")]
    EscapingSymlink { path: PathBuf, target: String },
    #[error("{path} is not a regular file, directory or symlink")]
    SpecialFile { path: PathBuf },
    #[error("ConfigMap key '{key}' in {root} is not a plain file name (no '/' and no '..'); use keys like handler.js")]
    BadConfigMapKey { root: PathBuf, key: String },
    #[error("missing handler file {file} in {root}: the {runtime} runtime loads the function from it")]
    MissingHandler {
        root: PathBuf,
        file: String,
        runtime: String,
    },
}

/// Names never copied into an image: version control, and files that carry credentials.
const EXCLUDED: &[&str] = &[
    ".git",
    ".npmrc",
    "pip.conf",
    ".pypirc",
    ".netrc",
    ".docker",
    "__pycache__",
    "node_modules",
];

impl FunctionSource {
    pub fn load(root: &Path, runtime: &Runtime) -> Result<FunctionSource, SourceError> {
        if !root.is_dir() {
            return Err(SourceError::NotADirectory(root.to_path_buf()));
        }
        let mut entries = if root.join("..data").exists() {
            load_configmap(root, runtime)?
        } else {
            load_directory(root)?
        };
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let spec = &runtime.spec;
        if !entries
            .iter()
            .any(|e| e.path == spec.handler_file && !matches!(e.kind, EntryKind::Dir))
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

fn load_directory(root: &Path) -> Result<Vec<SourceEntry>, SourceError> {
    let mut entries = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !e.file_name().to_str().is_some_and(|n| EXCLUDED.contains(&n)));
    for item in walk {
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
            let target_str = target.to_str().ok_or_else(|| SourceError::NotUtf8 {
                path: item.path().into(),
            })?;
            if !stays_inside(rel, &target) {
                return Err(SourceError::EscapingSymlink {
                    path: item.path().into(),
                    target: target_str.into(),
                });
            }
            EntryKind::Symlink {
                target: target_str.into(),
            }
        } else {
            return Err(SourceError::SpecialFile {
                path: item.path().into(),
            });
        };
        entries.push(SourceEntry { path, kind });
    }
    Ok(entries)
}

/// A ConfigMap mount: every visible entry is a key, read through its symlink into `..data`.
/// Kyma's keys `source` and `dependencies` become the runtime's handler and dependency files.
fn load_configmap(root: &Path, runtime: &Runtime) -> Result<Vec<SourceEntry>, SourceError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Read { path, source }
    };
    let data = root.join("..data");
    let data_real = data.canonicalize().map_err(read_err(&data))?;
    let mut entries = Vec::new();
    for item in std::fs::read_dir(root).map_err(read_err(root))? {
        let item = item.map_err(read_err(root))?;
        let name = item.file_name();
        let key = name
            .to_str()
            .ok_or_else(|| SourceError::NotUtf8 { path: item.path() })?;
        if key.starts_with("..") {
            continue; // the mount's own bookkeeping: ..data, ..2026_11_25_...
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
    Ok(entries)
}

/// Kubernetes' rule for ConfigMap keys.
fn is_configmap_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && !key.starts_with("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Whether a relative symlink at `link` (relative to the root) resolves to a path below the root.
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
}
