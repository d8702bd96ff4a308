//! The three steps of a build Job, and what passes between them through a directory: the
//! prepare step (registry credentials, no installer) writes an install request on a cache miss;
//! the install step (package credentials only) installs it and leaves the layer with its record;
//! the last step takes that layer only after checking everything it can about it, since the
//! install step ran the function author's code.

use super::{install_layer, mode_and_key, DependencyError, DependencyOptions, Installer, Phase, Plan};
use crate::function::runtime::Runtime;
use crate::oci::digest::Digest;
use crate::oci::layer::{LayerError, WrittenLayer};
use crate::oci::platform::Platform;
use crate::secrets::Scanner;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a dependency layer is made when it is not in a cache (a build Job's three steps: the
/// step that can read the registry never runs an installer, the one that installs never has
/// the registry's credentials).
#[derive(Debug, Clone)]
pub enum Handoff {
    /// Look in the caches only; on a miss, write the install request into this directory.
    Prepare(PathBuf),
    /// Never install: take the layer an install step left in this directory.
    Installed(PathBuf),
}

impl Handoff {
    /// The same handoff for one platform of a multi-platform build: its own subdirectory
    /// (`linux-arm64`), so that each platform's request, download and layer stay apart.
    pub fn for_platform(&self, platform: &Platform) -> Handoff {
        let sub = |dir: &Path| dir.join(platform.dir_name());
        match self {
            Handoff::Prepare(dir) => Handoff::Prepare(sub(dir)),
            Handoff::Installed(dir) => Handoff::Installed(sub(dir)),
        }
    }
}

/// The directories of `dir` that hold an install request: `dir` itself (a one-platform build)
/// and its platforms' subdirectories ([`Handoff::for_platform`]), in name order.
pub fn request_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.path().join(REQUEST_FILE).is_file())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    if dir.join(REQUEST_FILE).is_file() || dirs.is_empty() {
        dirs.insert(0, dir.to_path_buf());
    }
    dirs
}

/// The install request a prepare step leaves for the install step.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InstallRequest {
    pub key: String,
    pub runtime: String,
    pub base_digest: Digest,
    pub platform: PlatformRecord,
    pub epoch: u64,
}

/// The target platform in a request.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlatformRecord {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// The layer an install step leaves.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct InstalledRecord {
    key: String,
    digest: Digest,
    diff_id: Digest,
    size: u64,
    install_ms: u64,
    layer_ms: u64,
}

const REQUEST_FILE: &str = "request.json";
const INSTALLED_FILE: &str = "installed.json";
const INSTALLED_BLOB: &str = "layer.tar.gz";

/// What an install step does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStep {
    /// Download and run the scripts, leaving the layer.
    All,
    /// Only the downloads (the package-registry credentials at hand; no package code runs),
    /// leaving the staged tree in the handoff directory.
    Download,
    /// Only what follows the downloads (the scripts, without any credentials), leaving the layer.
    Scripts,
}

/// Written by a download step: whether it had credentials (so that the scripts step runs the
/// commands that follow such a download).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct DownloadedRecord {
    key: String,
    with_credentials: bool,
}

const DOWNLOADED_FILE: &str = "downloaded.json";

/// The install step: installs what the prepare step asked for (nothing if it asked nothing),
/// leaving the layer in `dir`. Runs no registry request.
pub async fn install_requested(
    plan: Option<&Plan>,
    installer: Option<&Installer>,
    runtime: &Runtime,
    dir: &Path,
    options: &DependencyOptions,
    work: &Path,
    step: InstallStep,
) -> Result<Option<String>, DependencyError> {
    let path = dir.join(REQUEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DependencyError::Read { path, source }),
    };
    let request: InstallRequest = serde_json::from_slice(&bytes).map_err(|e| DependencyError::Handoff {
        dir: dir.to_path_buf(),
        message: format!("{REQUEST_FILE} is not an install request: {e}"),
    })?;
    let (Some(plan), Some(installer)) = (plan, installer) else {
        return Err(DependencyError::Handoff {
            dir: dir.to_path_buf(),
            message: "an install was requested, but the function names no packages".into(),
        });
    };
    let target = Platform {
        os: request.platform.os.clone(),
        architecture: request.platform.architecture.clone(),
        variant: request.platform.variant.clone(),
    };
    let (pip_mode, key) = mode_and_key(plan, runtime, installer, &request.base_digest, &target, request.epoch)?;
    if key != request.key || runtime.name != request.runtime {
        return Err(DependencyError::Handoff {
            dir: dir.to_path_buf(),
            message: format!("the request is for key {} but this source and builder give {key}: the steps must run the same builder on the same source", request.key),
        });
    }
    let t = Instant::now();
    let blob = dir.join(INSTALLED_BLOB);
    // The two halves share the staged tree in the handoff directory.
    let (phase, work) = match step {
        InstallStep::All => (Phase::All, work.to_path_buf()),
        InstallStep::Download => (Phase::Download, dir.to_path_buf()),
        InstallStep::Scripts => {
            let bytes = std::fs::read(dir.join(DOWNLOADED_FILE)).map_err(|_| DependencyError::Handoff {
                dir: dir.to_path_buf(),
                message: "the download step did not run (no downloaded.json)".into(),
            })?;
            let record: DownloadedRecord = serde_json::from_slice(&bytes).map_err(|e| DependencyError::Handoff {
                dir: dir.to_path_buf(),
                message: format!("{DOWNLOADED_FILE} is damaged: {e}"),
            })?;
            if record.key != key {
                return Err(DependencyError::Handoff {
                    dir: dir.to_path_buf(),
                    message: format!("the download was for key {}, not {key}", record.key),
                });
            }
            let phase = Phase::Scripts {
                downloaded_with_credentials: record.with_credentials,
            };
            (phase, dir.to_path_buf())
        }
    };
    let installed = install_layer(
        plan,
        installer,
        runtime,
        pip_mode.as_ref(),
        &target,
        request.epoch,
        options,
        &work,
        &blob,
        phase,
    )
    .await?;
    let Some((written, install_ms)) = installed else {
        let record = DownloadedRecord {
            key: key.clone(),
            with_credentials: options.npmrc.is_some() || options.pip_conf.is_some(),
        };
        write_json(&dir.join(DOWNLOADED_FILE), &record)?;
        return Ok(Some(key));
    };
    let record = InstalledRecord {
        key: key.clone(),
        digest: written.digest.clone(),
        diff_id: written.diff_id.clone(),
        size: written.size,
        install_ms,
        layer_ms: (t.elapsed().as_millis() as u64).saturating_sub(install_ms),
    };
    write_json(&dir.join(INSTALLED_FILE), &record)?;
    Ok(Some(key))
}

/// The layer the install step left for `key`, copied to `spool` and checked against its
/// record: the install step ran the function author's code, so nothing it left is trusted
/// beyond what the digests prove.
pub(super) fn take_installed(dir: &Path, key: &str, spool: &Path) -> Result<(WrittenLayer, u64, u64), DependencyError> {
    let handoff = |message: String| DependencyError::Handoff {
        dir: dir.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(dir.join(INSTALLED_FILE)).map_err(|_| DependencyError::NotInstalled {
        dir: dir.to_path_buf(),
        key: key.to_string(),
    })?;
    let record: InstalledRecord =
        serde_json::from_slice(&bytes).map_err(|e| handoff(format!("{INSTALLED_FILE} is damaged: {e}")))?;
    if record.key != key {
        return Err(handoff(format!(
            "the installed layer is for key {}, not {key}",
            record.key
        )));
    }
    let (digest, size) = crate::oci::digest::copy_hashed(&dir.join(INSTALLED_BLOB), spool)
        .map_err(|e| handoff(format!("cannot read the installed layer: {e}")))?;
    if digest != record.digest || size != record.size {
        return Err(handoff(format!(
            "the installed layer is {digest} ({size} bytes), not the {} it was recorded as",
            record.digest
        )));
    }
    // The diffID is the install step's word: check it by decompressing.
    let diff_id = crate::oci::digest::gunzip_digest(spool)
        .map_err(|e| handoff(format!("the installed layer is not gzip: {e}")))?;
    if diff_id != record.diff_id {
        return Err(handoff("the installed layer's diffID does not match its record".into()));
    }
    // The scan the install step made is not trusted either.
    let scanner = Scanner::for_registered();
    if !scanner.is_empty() {
        let file = std::fs::File::open(spool).map_err(|e| handoff(e.to_string()))?;
        if scanner
            .scan_reader(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
            .map_err(|e| handoff(e.to_string()))?
        {
            return Err(DependencyError::Layer(LayerError::Secret {
                path: "the installed dependency layer".into(),
            }));
        }
    }
    Ok((
        WrittenLayer {
            file: spool.to_path_buf(),
            digest,
            diff_id,
            size,
        },
        record.install_ms,
        record.layer_ms,
    ))
}

/// The prepare step's request for `key`.
pub(super) fn write_request(
    dir: &Path,
    key: &str,
    runtime: &str,
    base_digest: &Digest,
    target: &Platform,
    epoch: u64,
) -> Result<(), DependencyError> {
    let request = InstallRequest {
        key: key.into(),
        runtime: runtime.into(),
        base_digest: base_digest.clone(),
        platform: PlatformRecord {
            os: target.os.clone(),
            architecture: target.architecture.clone(),
            variant: target.variant.clone(),
        },
        epoch,
    };
    write_json(&dir.join(REQUEST_FILE), &request)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), DependencyError> {
    let stage = |source| DependencyError::Stage {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(stage)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(stage)?;
    serde_json::to_writer(&mut tmp, value).map_err(|e| stage(e.into()))?;
    tmp.persist(path).map_err(|e| stage(e.error))?;
    Ok(())
}
