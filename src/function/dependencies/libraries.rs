//! The runtime libraries: the packages Kyma's runtime images carry (express, axios, cloudevents,
//! OpenTelemetry… for Node; requests, bottle, prometheus_client, OpenTelemetry… for Python), which
//! every function imports without declaring them. They are pinned by the lock files in
//! `runtimes/<server>/libraries/` and laid into one layer of their own at the runtime's
//! `libraries_dir`.
//!
//! The layer depends on the lock files only (not on the function, the build's timestamp or its
//! base), so it is the same bytes for every function of a runtime: the registry stores it once
//! and pushes mount it. It is made once, with network, and then read from a store; a builder
//! image ships a store (`fnbuild runtime-libraries --output DIR`), so a build Job in an
//! air-gapped cluster never downloads. Stores are layer caches ([`LayerCache`]): blobs are
//! verified against their digest before use.

use super::install;
use super::plan::Ecosystem;
use super::redact::Redactor;
use super::sandbox::Sandbox;
use super::DependencyError;
use crate::function::runtime::Runtime;
use crate::oci::layer::{write_layer_scanned, Content, EntryKind, LayerEntry, WrittenLayer, COMPRESSION_LEVEL};
use crate::oci::layer_cache::LayerCache;
use crate::secrets::Scanner;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Part of every key: bump it when the install commands or the layer's layout change.
const FORMAT: &str = "fnbuild-runtime-libraries-v1";
/// The timestamp of every entry: fixed, so the layer never depends on the build's epoch.
pub const EPOCH: u64 = 1;
/// Files an installer writes for itself that differ between its versions and that no program
/// reads at run time (npm's hidden lock file): left out, so every npm makes the same layer.
const INSTALLER_FILES: &[&str] = &[".package-lock.json"];

/// Where runtime library layers are looked for, and where a new one is kept.
#[derive(Debug, Clone, Default)]
pub struct LibraryStores {
    /// Searched in this order.
    pub read: Vec<PathBuf>,
    /// Where a layer made here is recorded (also searched).
    pub write: Option<PathBuf>,
    /// Never install: a layer no store has is an error (the build step of a Job).
    pub offline: bool,
}

impl LibraryStores {
    /// The stores of a build: `explicit` (`--runtime-libraries`), the one shipped beside the
    /// binary (`<prefix>/share/fnbuild/runtime-libraries` for `<prefix>/bin/fnbuild`), then the
    /// local cache. New layers go to `explicit`, else the cache.
    pub fn standard(explicit: Option<PathBuf>, cache_dir: Option<&Path>) -> LibraryStores {
        let shipped = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("share/fnbuild/runtime-libraries")));
        let cache = cache_dir.map(Path::to_path_buf);
        let write = explicit.clone().or_else(|| cache.clone());
        let read = explicit.into_iter().chain(shipped).chain(cache).collect();
        LibraryStores {
            read,
            write,
            offline: false,
        }
    }
}

/// What identifies a runtime's library layer: the lock files, where they go, how they are
/// installed.
pub fn key(runtime: &Runtime) -> Option<String> {
    let dir = runtime.spec.libraries_dir.as_deref()?;
    let mut h = Sha256::new();
    h.update(format!(
        "{FORMAT}\0dir={dir}\0installer={:?}\0",
        runtime.spec.installer()
    ));
    h.update(format!("python={:?}\0", runtime.spec.python_version));
    for file in &runtime.libraries {
        h.update(file.name.as_bytes());
        h.update(b"\0");
        h.update(file.bytes.len().to_le_bytes());
        h.update(&file.bytes);
    }
    Some(hex::encode(h.finalize()))
}

/// The runtime's library layer, if it has libraries: from a store, or installed now (and kept
/// in the writable store).
pub async fn provide(
    runtime: &Runtime,
    stores: &LibraryStores,
    npmrc: Option<&Path>,
    pip_conf: Option<&Path>,
    hide: &[PathBuf],
    work: &Path,
) -> Result<Option<WrittenLayer>, DependencyError> {
    let Some(key) = key(runtime) else {
        return Ok(None);
    };
    let mut searched: Vec<&PathBuf> = stores.read.iter().collect();
    if let Some(w) = stores.write.as_ref().filter(|w| !stores.read.contains(w)) {
        searched.push(w);
    }
    for dir in &searched {
        if let Some(layer) = LayerCache::new(dir).get(&key) {
            tracing::debug!(runtime = %runtime.name, store = %dir.display(), digest = %layer.digest, "runtime libraries from a store");
            return Ok(Some(layer));
        }
    }
    if stores.offline {
        return Err(DependencyError::LibrariesMissing {
            searched: searched
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let ecosystem = match runtime.spec.installer() {
        Some("npm") => Ecosystem::Npm,
        Some("pip") => Ecosystem::Pip,
        other => return Err(DependencyError::Unsupported(other.unwrap_or("none").into())),
    };
    tracing::info!(
        runtime = %runtime.name,
        "installing the runtime's libraries (once: they are kept for later builds)"
    );
    let installer = install::probe(ecosystem, runtime).await?;
    let staging = work.join(format!("libraries-{}", runtime.spec.server));
    let staged = staging.join("src");
    std::fs::create_dir_all(&staged).map_err(|source| DependencyError::Stage {
        path: staged.clone(),
        source,
    })?;
    for file in &runtime.libraries {
        let path = staged.join(&file.name);
        std::fs::write(&path, &file.bytes).map_err(|source| DependencyError::Stage { path, source })?;
    }
    let (invocation, result) = installer.library_invocation(runtime, &staged, npmrc, pip_conf);
    let redactor = Redactor::from_files(&[("--npmrc", npmrc), ("--pip-conf", pip_conf)])?;
    let sandbox = Sandbox {
        hide: hide.to_vec(),
        home: staging.join("home"),
        network_env: true,
    };
    let dir = runtime.spec.libraries_dir.clone().unwrap_or_default();
    let spool = staging.join("layer.tar.gz");
    let mut secrets = crate::secrets::registered();
    secrets.extend(redactor.secrets().iter().cloned());
    let layer = tokio::task::spawn_blocking(move || -> Result<WrittenLayer, DependencyError> {
        install::run(&invocation, &redactor, &sandbox)?;
        let entries = entries(&result, &dir)?;
        Ok(write_layer_scanned(
            entries,
            EPOCH,
            &spool,
            COMPRESSION_LEVEL,
            &Scanner::new(&secrets),
        )?)
    })
    .await
    .map_err(|e| DependencyError::Task(e.to_string()))??;
    tracing::info!(runtime = %runtime.name, digest = %layer.digest, size = layer.size, "runtime libraries installed");
    if let Some(store) = &stores.write {
        let store = LayerCache::new(store);
        store.put(&key, &layer);
        if let Some(kept) = store.get(&key) {
            return Ok(Some(kept));
        }
    }
    Ok(Some(layer))
}

/// Makes sure the cache repository holds the library layer (a signed one-layer image tagged
/// `<server>-libraries-<key>`), so that pushes to that registry mount it whatever the function's
/// repository: the layer is uploaded once per registry, not once per function. Its reference
/// there, if it has it.
pub async fn keep_in_cache_repo(
    client: &crate::registry::Client,
    repo: &crate::oci::reference::Reference,
    runtime: &Runtime,
    layer: &WrittenLayer,
    target: &crate::oci::platform::Platform,
    signing_key: &[u8],
) -> Option<crate::oci::reference::Reference> {
    let key = key(runtime)?;
    let tag = super::cache_tag(&format!("{}-libraries", runtime.spec.server), &key);
    let created = crate::oci::rfc3339(EPOCH);
    let name = format!("{} libraries", runtime.spec.server);
    super::ensure_in_registry(client, repo, &tag, &key, layer, target, &name, &created, signing_key).await
}

/// `fnbuild runtime-libraries`: the library layers of `names` (all runtimes with libraries when
/// empty) made into the store `output`, each once: taken from a store of `from` when one has
/// it, else installed. Returns each runtime's layer.
pub async fn make_store(
    runtimes: &crate::function::runtime::Runtimes,
    names: &[String],
    output: &Path,
    from: &[PathBuf],
    npmrc: Option<&Path>,
    pip_conf: Option<&Path>,
    hide: &[PathBuf],
) -> anyhow::Result<Vec<(String, WrittenLayer)>> {
    use anyhow::Context;
    let names = if names.is_empty() {
        runtimes.names()?
    } else {
        names.to_vec()
    };
    let stores = LibraryStores {
        read: std::iter::once(output.to_path_buf())
            .chain(from.iter().cloned())
            .collect(),
        write: None,
        offline: false,
    };
    let out = LayerCache::new(output);
    let work = crate::scratch::Scratch::new().context("cannot create a scratch directory")?;
    let mut made = Vec::new();
    for name in names {
        let runtime = runtimes.load(&name)?;
        let Some(key) = key(&runtime) else { continue };
        let layer = provide(&runtime, &stores, npmrc, pip_conf, hide, work.path())
            .await
            .with_context(|| format!("the {name} runtime's libraries"))?
            .expect("a runtime with a key has libraries");
        if out.get(&key).is_none() {
            out.put(&key, &layer);
        }
        let kept = out
            .get(&key)
            .with_context(|| format!("cannot write the {name} runtime's libraries into {}", output.display()))?;
        made.push((name, kept));
    }
    // A store is shipped in images and read by other users: readable by all, like the rest
    // of an installed program.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(output.join("layers")).into_iter().flatten().flatten() {
        let path = entry.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot make {} readable", path.display()))?;
    }
    Ok(made)
}

/// The layer's entries: `dir` and the directories above it, then the installed tree, without
/// the installers' own files and console scripts (their `#!` names the builder's interpreter).
fn entries(result: &Path, dir: &str) -> Result<Vec<LayerEntry>, DependencyError> {
    let dir = dir.trim_matches('/');
    let mut out = Vec::new();
    let mut path = String::new();
    for part in dir.split('/') {
        path = if path.is_empty() {
            part.into()
        } else {
            format!("{path}/{part}")
        };
        out.push(LayerEntry {
            path: path.clone(),
            kind: EntryKind::Dir,
        });
    }
    let walk_err = |path: &Path, message: String| DependencyError::Walk {
        path: path.to_path_buf(),
        message,
    };
    let mut walk = walkdir::WalkDir::new(result)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|e| walk_err(e.path().unwrap_or(result), e.to_string()))?;
        let rel = item.path().strip_prefix(result).expect("walk stays below its root");
        let rel_str = rel
            .to_str()
            .ok_or_else(|| walk_err(item.path(), "file name is not UTF-8".into()))?;
        if item.depth() == 1 && (INSTALLER_FILES.contains(&rel_str) || (rel_str == "bin" && item.file_type().is_dir()))
        {
            if item.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let ft = item.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            let meta = item.metadata().map_err(|e| walk_err(item.path(), e.to_string()))?;
            EntryKind::File {
                content: Content::Path(item.path().to_path_buf()),
                executable: crate::function::fs::has_execute_bit(&meta),
            }
        } else if ft.is_symlink() {
            // npm's `.bin` links point at the packages' own files.
            let target = std::fs::read_link(item.path()).map_err(|e| walk_err(item.path(), e.to_string()))?;
            let target = target
                .to_str()
                .ok_or_else(|| walk_err(item.path(), "symlink target is not UTF-8".into()))?
                .to_string();
            if target.starts_with('/') || !crate::function::source::stays_inside(rel, Path::new(&target)) {
                return Err(DependencyError::EscapingSymlink {
                    tool: "the runtime libraries' installer".into(),
                    path: rel_str.into(),
                    target,
                });
            }
            EntryKind::Symlink { target }
        } else {
            return Err(walk_err(item.path(), "not a regular file, directory or symlink".into()));
        };
        out.push(LayerEntry {
            path: format!("{dir}/{rel_str}"),
            kind,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::runtime::Runtimes;

    #[test]
    fn the_key_follows_the_lock_files_and_nothing_else() {
        let node24 = Runtimes::Embedded.load("nodejs24").unwrap();
        let node22 = Runtimes::Embedded.load("nodejs22").unwrap();
        let python = Runtimes::Embedded.load("python312").unwrap();
        // nodejs22 and nodejs24 share the server and its lock files: one layer for both.
        assert_eq!(key(&node24), key(&node22));
        assert!(key(&node24).is_some());
        assert_ne!(key(&node24), key(&python));
        let mut changed = node24.clone();
        changed.libraries[0].bytes.push(b'\n');
        assert_ne!(key(&changed), key(&node24));
    }

    #[test]
    fn installer_files_and_console_scripts_stay_out_and_links_must_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("express/lib")).unwrap();
        std::fs::write(root.join("express/lib/express.js"), "x").unwrap();
        std::fs::write(root.join(".package-lock.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/normalizer"), "#!/root/.pyenv/bin/python").unwrap();
        std::fs::create_dir_all(root.join(".bin")).unwrap();
        std::os::unix::fs::symlink("../express/lib/express.js", root.join(".bin/express")).unwrap();
        let paths: Vec<String> = entries(root, "/usr/src/app/node_modules")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "usr",
                "usr/src",
                "usr/src/app",
                "usr/src/app/node_modules",
                "usr/src/app/node_modules/.bin",
                "usr/src/app/node_modules/.bin/express",
                "usr/src/app/node_modules/express",
                "usr/src/app/node_modules/express/lib",
                "usr/src/app/node_modules/express/lib/express.js",
            ]
        );
        std::os::unix::fs::symlink("/etc/passwd", root.join(".bin/evil")).unwrap();
        let err = entries(root, "/usr/src/app/node_modules").unwrap_err().to_string();
        assert!(err.contains(".bin/evil -> /etc/passwd"), "{err}");
    }
}
