//! (Over 600 lines because of its tests, from line ~700: the pipeline itself is the first part.)
//!
//! A function's dependencies (npm packages, pip requirements) in a layer of their own, between
//! the runtime layer and the function's source layer, so that a change to the handler never
//! touches it.
//!
//! 1. [`plan`] reads the dependency file: nothing to install (no file, no packages) means no
//!    layer and no installer run; a malformed file is a clear error before anything runs.
//! 2. [`probe`] finds the host's installer (`npm`, `pip`) and its version.
//! 3. [`provide`] computes the cache key (runtime, base image digest, the staged files' bytes,
//!    installer identity, target platform, layer format, timestamp), then takes the layer from
//!    the local cache, else from the registry cache (`--cache-repo`), else installs: the
//!    installer runs in a staging directory that holds only the files the key hashed, with any
//!    credentials file passed by environment variable, and the result is written as a layer and
//!    stored in both caches.
//!
//! Credentials files (`--npmrc`, `--pip-conf`) are read only by the installer (and by the
//! [`Redactor`], which scrubs their secret values from the installer's output); they are never
//! staged, hashed into the key, logged, cached or written into a layer.

mod cache;
mod handoff;
mod install;
pub mod libraries;
mod native;
mod plan;
mod redact;
mod sandbox;

pub use cache::{
    sign as sign_cache_entry, tag as cache_tag, LocalCache, DIFF_ID_ANNOTATION, KEY_ANNOTATION, SIGNATURE_ANNOTATION,
};
pub use handoff::{install_requested, request_dirs, Handoff, InstallRequest, InstallStep};
pub use install::{probe, probe_cached, which, Installer, PipMode};
pub use plan::{plan, Ecosystem, Plan};
pub use redact::Redactor;
pub use sandbox::protect_this_process;

use crate::function::runtime::Runtime;
use crate::function::source::stays_inside;
use crate::oci::digest::Digest;
use crate::oci::layer::{write_layer_scanned, Content, EntryKind, LayerEntry, LayerError, WrittenLayer};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{rfc3339, BlobLocation};
use crate::registry::{BlobSource, Client};
use crate::secrets::Scanner;
use sandbox::Sandbox;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Part of every key: bump it whenever the installer's flags or the layer's layout or
/// compression change, so that layers made the old way are not reused.
pub const LAYER_FORMAT: u32 = 2;

/// gzip's fastest level for the dependency layer (go-containerregistry's, and so ko's and
/// crane's, default): a cold build waits for it right after the installer, and on 55 MB of
/// numpy it compresses 3.4 times faster than level 6 for a blob 16% larger. The layer is made
/// once per dependency set and then comes from a cache.
pub const COMPRESSION_LEVEL: u32 = 1;

/// How dependencies are installed and cached.
#[derive(Debug, Clone, Default)]
pub struct DependencyOptions {
    /// An npm config file (private registries, tokens) for the install only.
    pub npmrc: Option<PathBuf>,
    /// A pip config file (private indexes, credentials) for the install only.
    pub pip_conf: Option<PathBuf>,
    /// The local cache's root (`<dir>/dependencies`); `None`: no local cache.
    pub cache_dir: Option<PathBuf>,
    /// A repository for cached dependency layers, each a one-layer image tagged by its key.
    pub cache_repo: Option<Reference>,
    /// Install afresh even when a cache has the layer (the result still refreshes the caches).
    pub no_cache: bool,
    /// The key registry cache entries are signed with (HMAC-SHA256); entries without a valid
    /// signature are misses. Without it the cache repository is not used.
    pub cache_signing_key: Option<Vec<u8>>,
    /// Files and directories the installer must never see (registry configs, the cache key,
    /// fnbuild's caches).
    pub hide: Vec<PathBuf>,
    /// Where the layer is made when no cache has it.
    pub handoff: Option<Handoff>,
}

impl DependencyOptions {
    /// Every secret the build holds (registered so far), with those of the credentials files.
    fn secrets_with_files(&self) -> Result<Vec<String>, DependencyError> {
        let redactor = Redactor::from_files(&[
            ("--npmrc", self.npmrc.as_deref()),
            ("--pip-conf", self.pip_conf.as_deref()),
        ])?;
        let mut all = crate::secrets::registered();
        all.extend(redactor.secrets().iter().cloned());
        Ok(all)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    #[error("{file} {message}")]
    BadFile { file: String, message: String },
    #[error("the runtime's installer '{0}' is not supported (npm or pip)")]
    Unsupported(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot stage the dependency files at {path}: {source}")]
    Stage { path: PathBuf, source: std::io::Error },
    #[error("{tool} is needed to install the packages of the function's {file} but is not on PATH; install it, or build where it is installed")]
    InstallerMissing { tool: String, file: String },
    #[error("{program}: {message}", program = program.display())]
    InstallerBroken { program: PathBuf, message: String },
    #[error("{command} failed ({status}): {output}")]
    InstallFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{tool} left a symlink {path} -> {target} that points outside the installed packages")]
    EscapingSymlink { tool: String, path: String, target: String },
    #[error("cannot read the installed packages at {path}: {message}", path = path.display())]
    Walk { path: PathBuf, message: String },
    #[error("cannot read the {flag} file {path}: {source}", path = path.display())]
    Credentials {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A cross-platform install left native code for the builder's machine only.
    #[error("package {package} has no prebuilt binary for {platform}: {file} is built for {machine}; use a version of it that ships one for {platform} (or its pure-JavaScript / pure-Python alternative), or build for {host} only")]
    ForeignBinary {
        package: String,
        platform: String,
        file: String,
        machine: String,
        host: String,
    },
    #[error("the installer task stopped: {0}")]
    Task(String),
    #[error("dependency handoff {dir}: {message}", dir = dir.display())]
    Handoff { dir: PathBuf, message: String },
    /// `--installed-dependencies DIR` with nothing in DIR: the dependencies name packages that
    /// no cache has and no install step ran (the controller then builds again with one).
    #[error("dependency handoff {dir}: no dependency layer for key {key}: the dependencies name packages that no cache has, and no install step ran (this step never installs)", dir = dir.display())]
    NotInstalled { dir: PathBuf, key: String },
    #[error("no store has them ({searched}) and a build Job's steps (--prepare-dependencies, --installed-dependencies) install nothing: make a store with `fnbuild runtime-libraries --output DIR` and give --runtime-libraries DIR (the builder image ships one)")]
    LibrariesMissing { searched: String },
}

/// Where the dependency layer came from, for `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    HitLocal,
    HitRegistry,
    Miss,
    None,
}

/// The `dependencies` object of the `--json` result.
#[derive(Debug, Clone, Serialize)]
pub struct DependencySummary {
    pub cache: CacheOutcome,
    /// The cache key (64 hex digits), when there are dependencies.
    pub key: Option<String>,
    /// Time the installer ran (0 on a cache hit).
    pub install_ms: u64,
    /// Time to write (tar, compress, hash) the layer (0 on a cache hit).
    pub layer_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// The cache repository's image holding the layer (`--cache-repo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_image: Option<String>,
}

impl DependencySummary {
    pub fn none() -> DependencySummary {
        DependencySummary {
            cache: CacheOutcome::None,
            key: None,
            install_ms: 0,
            layer_ms: 0,
            installer: None,
            cache_image: None,
        }
    }
}

/// The dependency layer, ready to be appended to the image.
#[derive(Debug, Clone)]
pub struct ProvidedLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub location: BlobLocation,
    /// The cache repository's copy (a push to that registry mounts it from there).
    pub registry_copy: Option<Reference>,
    pub summary: DependencySummary,
}

impl ProvidedLayer {
    /// As a written layer (for `Image::append_layer`); its location is set separately.
    pub fn written(&self) -> WrittenLayer {
        let file = match &self.location {
            BlobLocation::File(f) => f.clone(),
            BlobLocation::Registry(_) => PathBuf::new(),
        };
        WrittenLayer {
            file,
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size,
        }
    }
}

/// What [`provide`] needs besides the plan.
pub struct Context<'a> {
    pub runtime: &'a Runtime,
    /// The base image's manifest digest and config.
    pub base_digest: &'a Digest,
    pub base_config: &'a serde_json::Value,
    pub epoch: u64,
    pub options: &'a DependencyOptions,
    /// A registry client, when the build has one (needed for `--cache-repo`).
    pub client: Option<&'a Client>,
    /// The build's scratch directory.
    pub work: &'a Path,
}

/// What [`provide`] found.
pub enum Provided {
    Layer(Box<ProvidedLayer>),
    /// Not in any cache: the request is in the handoff directory.
    Requested {
        key: String,
    },
}

/// The dependency layer for `plan`: from a cache, or installed and written now (or, with a
/// handoff, requested from / taken from the install step).
pub async fn provide(plan: &Plan, installer: &Installer, ctx: &Context<'_>) -> Result<Provided, DependencyError> {
    let runtime = ctx.runtime;
    let target = Platform::of_config(ctx.base_config);
    let (pip_mode, key) = mode_and_key(plan, runtime, installer, ctx.base_digest, &target, ctx.epoch)?;
    let tag = cache::tag(&runtime.name, &key);
    let local = ctx.options.cache_dir.as_deref().map(LocalCache::new);
    let signing_key = ctx.options.cache_signing_key.as_deref();
    let repo = match (&ctx.options.cache_repo, ctx.client, signing_key) {
        (Some(repo), Some(client), Some(k)) => Some((repo, client, k)),
        _ => None,
    };
    let created = rfc3339(ctx.epoch);
    let summary = |cache, install_ms, layer_ms, cache_image: Option<&Reference>| DependencySummary {
        cache,
        key: Some(key.clone()),
        install_ms,
        layer_ms,
        installer: Some(installer.identity.clone()),
        cache_image: cache_image.map(|r| r.to_string()),
    };
    tracing::info!(file = %plan.dependency_file, packages = plan.packages, installer = %installer.identity, key = %key, "dependencies");

    if !ctx.options.no_cache {
        if let Some(hit) = local.as_ref().and_then(|c| c.get(&key)) {
            tracing::info!(digest = %hit.digest, "dependency layer from the local cache: nothing to install");
            let registry_copy = match repo {
                Some((repo, client, k)) => {
                    ensure_in_registry(client, repo, &tag, &key, &hit, &target, &runtime.name, &created, k).await
                }
                None => None,
            };
            return Ok(Provided::Layer(Box::new(ProvidedLayer {
                digest: hit.digest.clone(),
                diff_id: hit.diff_id.clone(),
                size: hit.size,
                location: BlobLocation::File(hit.file.clone()),
                summary: summary(CacheOutcome::HitLocal, 0, 0, registry_copy.as_ref()),
                registry_copy,
            })));
        }
        if let Some((repo, client, k)) = repo {
            match cache::registry_get(client, repo, &tag, &key, k).await {
                Ok(Some(found)) => {
                    tracing::info!(cache = %found.reference, digest = %found.digest, "dependency layer from the cache repository: nothing to install");
                    return Ok(Provided::Layer(Box::new(ProvidedLayer {
                        digest: found.digest,
                        diff_id: found.diff_id,
                        size: found.size,
                        location: BlobLocation::Registry(found.reference.clone()),
                        summary: summary(CacheOutcome::HitRegistry, 0, 0, Some(&found.reference)),
                        registry_copy: Some(found.reference),
                    })));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the dependency cache repository; installing"),
            }
        }
    }

    let (written, install_ms, layer_ms) = match &ctx.options.handoff {
        Some(Handoff::Prepare(dir)) => {
            handoff::write_request(dir, &key, &runtime.name, ctx.base_digest, &target, ctx.epoch)?;
            tracing::info!(key = %key, dir = %dir.display(), "dependencies not in a cache: install requested");
            return Ok(Provided::Requested { key });
        }
        Some(Handoff::Installed(dir)) => handoff::take_installed(dir, &key, &ctx.work.join("installed-layer"))?,
        None => {
            let t = Instant::now();
            let spool = local
                .as_ref()
                .and_then(|c| c.spool().ok())
                .unwrap_or_else(|| ctx.work.join("dependencies-layer.tar.gz"));
            let (written, install_ms) = install_layer(
                plan,
                installer,
                runtime,
                pip_mode.as_ref(),
                &target,
                ctx.epoch,
                ctx.options,
                ctx.work,
                &spool,
                Phase::All,
            )
            .await?
            .expect("a whole install writes its layer");
            let layer_ms = (t.elapsed().as_millis() as u64).saturating_sub(install_ms);
            (written, install_ms, layer_ms)
        }
    };
    tracing::info!(digest = %written.digest, size = written.size, install_ms, layer_ms, "dependency layer written");
    let written = match &local {
        Some(c) => c
            .put(&key, &written, &runtime.name, &installer.identity)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot store the dependency layer in the local cache");
                written
            }),
        None => written,
    };
    let registry_copy = match repo {
        Some((repo, client, k)) => cache::registry_put(
            client,
            repo,
            &tag,
            &key,
            &written.digest,
            &written.diff_id,
            written.size,
            BlobSource::File(written.file.clone()),
            &target,
            &runtime.name,
            &created,
            k,
        )
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot store the dependency layer in the cache repository"))
        .ok(),
        None => None,
    };
    Ok(Provided::Layer(Box::new(ProvidedLayer {
        digest: written.digest.clone(),
        diff_id: written.diff_id.clone(),
        size: written.size,
        location: BlobLocation::File(written.file.clone()),
        summary: summary(CacheOutcome::Miss, install_ms, layer_ms, registry_copy.as_ref()),
        registry_copy,
    })))
}

/// Runs the installer in a staging directory holding exactly the files the key hashed, inside
/// its sandbox, and writes the result as a layer to `spool` (scanned for the build's secrets).
#[allow(clippy::too_many_arguments)]
async fn install_layer(
    plan: &Plan,
    installer: &Installer,
    runtime: &Runtime,
    pip_mode: Option<&PipMode>,
    target: &Platform,
    epoch: u64,
    options: &DependencyOptions,
    work: &Path,
    spool: &Path,
    phase: Phase,
) -> Result<Option<(WrittenLayer, u64)>, DependencyError> {
    let staging = work.join("dependencies");
    let staged = staging.join("src");
    if !matches!(phase, Phase::Scripts { .. }) {
        install::stage(&plan.inputs, &staged)?;
    }
    // The scripts step has no credentials files, but runs the commands that follow a download
    // made with them.
    let pip_conf = match phase {
        Phase::Scripts {
            downloaded_with_credentials: true,
        } => Some(PathBuf::from("/dev/null")),
        _ => options.pip_conf.clone(),
    };
    let redactor = Redactor::from_files(&[
        ("--npmrc", options.npmrc.as_deref()),
        ("--pip-conf", options.pip_conf.as_deref()),
    ])?;
    let (invocations, result_dir) = installer.invocations(&install::Job {
        plan,
        staged: &staged,
        target: &staging.join("target"),
        mode: pip_mode,
        platform: target,
        npmrc: options.npmrc.as_deref(),
        pip_conf: pip_conf.as_deref(),
        epoch,
    });
    // The credentials files are visible to the downloading phase only; the build's other
    // secrets (registry configs, cache key, the caches) never.
    let credential_files: Vec<PathBuf> = [&options.npmrc, &options.pip_conf]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let t = Instant::now();
    let home = staging.join("home");
    let hidden = options.hide.clone();
    tokio::task::spawn_blocking(move || -> Result<(), DependencyError> {
        for inv in &invocations {
            let wanted = match phase {
                Phase::All => true,
                Phase::Download => inv.credentials,
                Phase::Scripts { .. } => !inv.credentials,
            };
            if !wanted {
                continue;
            }
            if inv.scripts.is_some_and(|any| !any(&inv.cwd)) {
                tracing::debug!("no install scripts: {} skipped", inv.label);
                continue;
            }
            let mut hide = hidden.clone();
            if !inv.credentials {
                hide.extend(credential_files.iter().cloned());
            }
            let sandbox = Sandbox {
                hide,
                home: home.clone(),
                network_env: inv.credentials || inv.scripts.is_none(),
            };
            install::run(inv, &redactor, &sandbox)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| DependencyError::Task(e.to_string()))??;
    let install_ms = t.elapsed().as_millis() as u64;
    if matches!(phase, Phase::Download) {
        // The download's home (npm's cache and logs) stays with the step that had the
        // credentials; the scripts step gets a home of its own.
        let _ = std::fs::remove_dir_all(staging.join("home"));
        return Ok(None);
    }

    let host = Platform::host();
    if !target.same_machine(&host) {
        if let Some(f) = native::foreign_package(&result_dir, target) {
            return Err(DependencyError::ForeignBinary {
                package: f.package,
                platform: target.to_string(),
                file: f.file,
                machine: f.machine,
                host: host.to_string(),
            });
        }
    }
    let entries = layer_entries(&result_dir, runtime, plan.ecosystem.name())?;
    let spool = spool.to_path_buf();
    let scanner = Scanner::new(&options.secrets_with_files()?);
    let written =
        tokio::task::spawn_blocking(move || write_layer_scanned(entries, epoch, &spool, COMPRESSION_LEVEL, &scanner))
            .await
            .map_err(|e| DependencyError::Task(e.to_string()))??;
    Ok(Some((written, install_ms)))
}

/// Which of an install's commands run: all of them, or (a build Job with a package-registry
/// Secret) the downloads with the credentials in one container and the rest, the scripts,
/// in another that never has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    All,
    Download,
    Scripts { downloaded_with_credentials: bool },
}

/// After a local hit: makes sure the cache repository has the layer too (for other builders,
/// and so pushes to that registry mount it); its reference there, if it has.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ensure_in_registry(
    client: &Client,
    repo: &Reference,
    tag: &str,
    key: &str,
    layer: &WrittenLayer,
    target: &Platform,
    runtime: &str,
    created: &str,
    signing_key: &[u8],
) -> Option<Reference> {
    match cache::registry_get(client, repo, tag, key, signing_key).await {
        Ok(Some(found)) if found.digest == layer.digest => return Some(found.reference),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the dependency cache repository");
            return None;
        }
    }
    let source = BlobSource::File(layer.file.clone());
    cache::registry_put(
        client,
        repo,
        tag,
        key,
        &layer.digest,
        &layer.diff_id,
        layer.size,
        source,
        target,
        runtime,
        created,
        signing_key,
    )
    .await
    .map_err(|e| tracing::warn!(error = %e, "cannot store the dependency layer in the cache repository"))
    .ok()
}

/// How pip picks distributions for `target` (npm: none), and the cache key that follows.
fn mode_and_key(
    plan: &Plan,
    runtime: &Runtime,
    installer: &Installer,
    base_digest: &Digest,
    target: &Platform,
    epoch: u64,
) -> Result<(Option<PipMode>, String), DependencyError> {
    let pip_mode = installer.mode(runtime, target);
    let key = cache_key(plan, runtime, installer, pip_mode.as_ref(), base_digest, target, epoch)?;
    Ok((pip_mode, key))
}

/// The cache key: sha256 over everything that changes the layer's bytes. Credentials files are
/// not part of it (a private registry serves the same packages whoever asks).
fn cache_key(
    plan: &Plan,
    runtime: &Runtime,
    installer: &Installer,
    pip_mode: Option<&PipMode>,
    base_digest: &Digest,
    target: &Platform,
    epoch: u64,
) -> Result<String, DependencyError> {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
        h.update(b"\n");
    };
    field("fnbuild-dependencies", LAYER_FORMAT.to_string().as_bytes());
    field("runtime", runtime.name.as_bytes());
    field("dependency_dir", runtime.spec.dependency_dir.as_bytes());
    field("function_dir", runtime.spec.function_dir.as_bytes());
    field(
        "python_version",
        runtime.spec.python_version.as_deref().unwrap_or("").as_bytes(),
    );
    field("base", base_digest.as_str().as_bytes());
    field("platform", target.to_string().as_bytes());
    field("installer", installer.identity.as_bytes());
    let mode = match pip_mode {
        None => String::new(),
        Some(PipMode::Native) => "native".into(),
        Some(PipMode::Cross {
            python_version,
            platforms,
        }) => format!("cross {python_version} {}", platforms.join(",")),
    };
    field("mode", mode.as_bytes());
    field("epoch", epoch.to_string().as_bytes());
    for input in &plan.inputs {
        match &input.kind {
            EntryKind::Dir => field("dir", input.path.as_bytes()),
            EntryKind::Symlink { target } => field("symlink", format!("{}\0{target}", input.path).as_bytes()),
            EntryKind::File { content, executable } => {
                let digest = match content {
                    Content::Bytes(b) => hex::encode(Sha256::digest(b)),
                    Content::Path(p) => {
                        let bytes = std::fs::read(p).map_err(|source| DependencyError::Read {
                            path: p.clone(),
                            source,
                        })?;
                        hex::encode(Sha256::digest(&bytes))
                    }
                };
                field("file", format!("{}\0{executable}\0{digest}", input.path).as_bytes());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The layer's entries: the dependency directory (and the directories from the function's
/// directory down to it, which are ours) and everything the installer put there.
fn layer_entries(result: &Path, runtime: &Runtime, tool: &str) -> Result<Vec<LayerEntry>, DependencyError> {
    let dep_dir = runtime.spec.dependency_dir.trim_matches('/');
    let function_dir = runtime.spec.function_dir.trim_matches('/');
    let dir = |path: String| LayerEntry {
        path,
        kind: EntryKind::Dir,
    };
    let mut entries = Vec::new();
    match dep_dir.strip_prefix(&format!("{function_dir}/")) {
        Some(below) => {
            let mut path = function_dir.to_string();
            entries.push(dir(path.clone()));
            for part in below.split('/') {
                path = format!("{path}/{part}");
                entries.push(dir(path.clone()));
            }
        }
        None => entries.push(dir(dep_dir.to_string())),
    }
    if !result.is_dir() {
        return Ok(entries);
    }
    let walk_err = |path: &Path, message: String| DependencyError::Walk {
        path: path.to_path_buf(),
        message,
    };
    for item in walkdir::WalkDir::new(result)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| walk_err(e.path().unwrap_or(result), e.to_string()))?;
        let rel = item.path().strip_prefix(result).expect("walk stays below its root");
        let rel_str = rel
            .to_str()
            .ok_or_else(|| walk_err(item.path(), "file name is not UTF-8".into()))?;
        let path = format!("{dep_dir}/{rel_str}");
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
            let target = std::fs::read_link(item.path()).map_err(|e| walk_err(item.path(), e.to_string()))?;
            let target = target
                .to_str()
                .ok_or_else(|| walk_err(item.path(), "symlink target is not UTF-8".into()))?
                .to_string();
            if !stays_inside(rel, Path::new(&target)) {
                return Err(DependencyError::EscapingSymlink {
                    tool: tool.into(),
                    path: rel_str.into(),
                    target,
                });
            }
            EntryKind::Symlink { target }
        } else {
            return Err(walk_err(item.path(), "not a regular file, directory or symlink".into()));
        };
        entries.push(LayerEntry { path, kind });
    }
    // Each link stayed inside on its own; now through each other, as the kernel will resolve
    // them in the image (`a -> b/..`, `b -> ../x`).
    let prefix = format!("{dep_dir}/");
    crate::function::links::check_links(
        entries
            .iter()
            .filter_map(|e| Some((e.path.strip_prefix(&prefix)?, &e.kind))),
    )
    .map_err(|e| match e.problem {
        crate::function::links::LinkProblem::Loop => walk_err(&result.join(&e.path), e.to_string()),
        _ => DependencyError::EscapingSymlink {
            tool: tool.into(),
            path: e.path.clone(),
            target: e.target.clone(),
        },
    })?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::runtime::Runtimes;

    fn plan_for(files: &[(&str, &str)], runtime: &Runtime) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            std::fs::write(dir.path().join(p), c).unwrap();
        }
        let src = crate::function::source::FunctionSource::load(dir.path(), runtime).unwrap();
        let plan = plan(&src, runtime).unwrap().unwrap();
        (dir, plan)
    }

    #[test]
    fn keys_change_with_what_changes_the_layer_and_nothing_else() {
        let rt = Runtimes::Embedded.load("nodejs20").unwrap();
        let npm = Installer {
            ecosystem: Ecosystem::Npm,
            program: "npm".into(),
            identity: "npm 11 node v20".into(),
            python: None,
        };
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let pkg = r#"{"dependencies":{"left-pad":"1.3.0"}}"#;
        let (_a, plan) = plan_for(&[("handler.js", "one"), ("package.json", pkg)], &rt);
        let key = |plan: &Plan, installer: &Installer, base: &str, target: &Platform, epoch: u64| {
            cache_key(plan, &rt, installer, None, &Digest::of(base.as_bytes()), target, epoch).unwrap()
        };
        let k = key(&plan, &npm, "sha256:b", &amd64, 1);
        assert_eq!(k.len(), 64);
        let (_b, same_deps_other_handler) = plan_for(&[("handler.js", "two"), ("package.json", pkg)], &rt);
        assert_eq!(k, key(&same_deps_other_handler, &npm, "sha256:b", &amd64, 1));
        let (_c, locked) = plan_for(
            &[
                ("handler.js", "one"),
                ("package.json", pkg),
                ("package-lock.json", "{}"),
            ],
            &rt,
        );
        assert_ne!(k, key(&locked, &npm, "sha256:b", &amd64, 1));
        let (_d, other) = plan_for(
            &[
                ("handler.js", "one"),
                ("package.json", r#"{"dependencies":{"left-pad":"1.2.0"}}"#),
            ],
            &rt,
        );
        assert_ne!(k, key(&other, &npm, "sha256:b", &amd64, 1));
        assert_ne!(k, key(&plan, &npm, "sha256:c", &amd64, 1));
        assert_ne!(
            k,
            key(
                &plan,
                &npm,
                "sha256:b",
                &Platform {
                    architecture: "arm64".into(),
                    ..amd64.clone()
                },
                1
            )
        );
        assert_ne!(k, key(&plan, &npm, "sha256:b", &amd64, 2));
        assert_ne!(
            k,
            key(
                &plan,
                &Installer {
                    identity: "npm 12 node v20".into(),
                    ..npm.clone()
                },
                "sha256:b",
                &amd64,
                1
            )
        );
    }

    #[test]
    fn the_layer_holds_the_dependency_dir_and_refuses_escaping_links() {
        let rt = Runtimes::Embedded.load("nodejs20").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let nm = dir.path().join("node_modules");
        std::fs::create_dir_all(nm.join("a/bin")).unwrap();
        std::fs::create_dir_all(nm.join(".bin")).unwrap();
        std::fs::write(nm.join("a/index.js"), "x").unwrap();
        std::fs::write(nm.join("a/bin/a.js"), "x").unwrap();
        std::os::unix::fs::symlink("../a/bin/a.js", nm.join(".bin/a")).unwrap();
        let entries = layer_entries(&nm, &rt, "npm").unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/src/app/function",
                "usr/src/app/function/node_modules",
                "usr/src/app/function/node_modules/.bin",
                "usr/src/app/function/node_modules/.bin/a",
                "usr/src/app/function/node_modules/a",
                "usr/src/app/function/node_modules/a/bin",
                "usr/src/app/function/node_modules/a/bin/a.js",
                "usr/src/app/function/node_modules/a/index.js",
            ]
        );
        std::os::unix::fs::symlink("/etc/passwd", nm.join("a/evil")).unwrap();
        let err = layer_entries(&nm, &rt, "npm").unwrap_err().to_string();
        assert_eq!(
            err,
            "npm left a symlink a/evil -> /etc/passwd that points outside the installed packages"
        );
        std::fs::remove_file(nm.join("a/evil")).unwrap();
        // Two links that each stay inside, but not through each other.
        std::os::unix::fs::symlink("..", nm.join("a/top")).unwrap();
        std::os::unix::fs::symlink("../a/top/../etc/passwd", nm.join(".bin/esc")).unwrap();
        let err = layer_entries(&nm, &rt, "npm").unwrap_err().to_string();
        assert!(err.starts_with("npm left a symlink .bin/esc -> "), "{err}");

        let py = Runtimes::Embedded.load("python312").unwrap();
        let empty = layer_entries(&dir.path().join("none"), &py, "pip").unwrap();
        assert_eq!(
            empty.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["kubeless", "kubeless/lib"]
        );
    }
}
