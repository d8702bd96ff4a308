//! Where built images go: an OCI image layout directory, a docker-archive tarball, or the local
//! Docker daemon (registries are pushed to by the registry client). Each sink writes its blobs
//! first and the file that names the image last, so a failed build never leaves an existing
//! layout or archive referring to something missing.

use crate::oci::digest::digest_hex;
use crate::oci::{canonical_json, BlobLocation, BuiltImage};
use crate::oci::reference::Reference;
use crate::sources::{daemon_message, layout_blob_path, REF_NAME};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An output as the user wrote it.
#[derive(Debug, Clone)]
pub enum Output {
    OciLayout { dir: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf, name: Option<String> },
    DockerDaemon { name: String },
    Registry(Reference),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("output {output}: cannot write {path}: {source}")]
    Write {
        output: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("output {output}: {message}")]
    Invalid { output: String, message: String },
    #[error("output {output}: the Docker daemon at {message}")]
    Docker { output: String, message: String },
}

impl std::str::FromStr for Output {
    type Err = String;

    /// `oci:DIR[:TAG]` or `docker-archive:FILE[:NAME:TAG]` (what `--output` takes).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("oci", rest)) if !rest.is_empty() => {
                let (dir, tag) = match rest.split_once(':') {
                    Some((d, t)) => (d, Some(t)),
                    None => (rest, None),
                };
                if let Some(t) = tag {
                    if !is_valid_tag(t) {
                        return Err(format!(
                            "'{s}': '{t}' is not a valid tag (letters, digits, _ . -; at most 128)"
                        ));
                    }
                }
                Ok(Output::OciLayout {
                    dir: dir.into(),
                    tag: tag.map(String::from),
                })
            }
            Some(("docker-archive", rest)) if !rest.is_empty() => {
                let (file, name) = match rest.split_once(':') {
                    Some((f, n)) => (f, Some(n)),
                    None => (rest, None),
                };
                let name = name
                    .map(|n| {
                        n.parse::<Reference>()
                            .map(|r| r.to_string())
                            .map_err(|e| format!("'{s}': {e}"))
                    })
                    .transpose()?;
                Ok(Output::DockerArchive {
                    file: file.into(),
                    name,
                })
            }
            _ => Err(format!("'{s}': write oci:DIR[:TAG] or docker-archive:FILE[:NAME:TAG]")),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Output::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Output::DockerArchive { file, name: Some(n) } => write!(f, "docker-archive:{}:{n}", file.display()),
            Output::DockerArchive { file, name: None } => write!(f, "docker-archive:{}", file.display()),
            Output::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            Output::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Checks, before any work, that `output` can be written where it says: an OCI layout goes into
/// a missing or empty directory or an existing layout (never into some other directory), an
/// archive into an existing directory (or into a device, FIFO or `/dev/stdout`).
pub fn check_target(output: &Output) -> Result<(), SinkError> {
    let invalid = |message: String| SinkError::Invalid {
        output: output.to_string(),
        message,
    };
    match output {
        Output::OciLayout { dir, .. } => match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SinkError::Write {
                output: output.to_string(),
                path: dir.clone(),
                source,
            }),
            Ok(m) if !m.is_dir() => Err(invalid(format!("{} is not a directory", dir.display()))),
            Ok(_) => {
                let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
                if empty || dir.join("oci-layout").is_file() {
                    read_index(&dir.join("index.json"), &output.to_string()).map(|_| ())
                } else {
                    Err(invalid(format!(
                        "{} is neither empty nor an OCI layout (no oci-layout file); not touching it",
                        dir.display()
                    )))
                }
            }
        },
        Output::DockerArchive { file, .. } => {
            if file.is_dir() {
                return Err(invalid(format!("{} is a directory", file.display())));
            }
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if stream_target(file) || parent.is_dir() {
                Ok(())
            } else {
                Err(invalid(format!("the directory {} does not exist", parent.display())))
            }
        }
        Output::DockerDaemon { .. } | Output::Registry(_) => Ok(()),
    }
}

/// A layout's index.json: an object with a manifests list (a new one when there is none yet).
/// Anything else is someone else's file, left alone.
fn read_index(path: &Path, output: &str) -> Result<Value, SinkError> {
    let invalid = |message: String| SinkError::Invalid {
        output: output.into(),
        message: format!("{}: {message}; not touching it", path.display()),
    };
    let index: Value = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not valid JSON ({e})")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(json!({"schemaVersion": 2, "manifests": []})),
        Err(source) => {
            return Err(SinkError::Write {
                output: output.into(),
                path: path.into(),
                source,
            })
        }
    };
    if !index.get("manifests").is_some_and(Value::is_array) {
        return Err(invalid("not an OCI image index (no manifests list)".into()));
    }
    Ok(index)
}

/// Whether `file` is something to write into rather than replace: a device, a FIFO, a socket
/// (`/dev/stdout` resolves to one of them), followed through symlinks.
fn stream_target(file: &Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Holds an exclusive lock on a layout directory (flock on the directory itself, so no file is
/// added to the layout): concurrent builds into one layout take turns and every tag survives.
struct LayoutLock {
    _held: std::fs::File,
}

impl LayoutLock {
    fn take(dir: &Path) -> std::io::Result<LayoutLock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(dir)?;
        // SAFETY: flock on a descriptor we own; released when it is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(LayoutLock { _held: f })
    }
}

/// Adds the image to the OCI layout at `dir` (created if missing, and removed again when the
/// image cannot be written), replacing what `tag` named before. Writers to one layout take
/// turns (see [`LayoutLock`]).
pub fn write_oci_layout(dir: &Path, tag: Option<&str>, image: &BuiltImage, output: &str) -> Result<(), SinkError> {
    let created = !dir.exists();
    let result = add_to_layout(dir, tag, image, output);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn add_to_layout(dir: &Path, tag: Option<&str>, image: &BuiltImage, output: &str) -> Result<(), SinkError> {
    let write_err = |path: &Path| {
        let (output, path) = (output.to_string(), path.to_path_buf());
        move |source| SinkError::Write { output, path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let _lock = LayoutLock::take(dir).map_err(write_err(dir))?;
    let index_path = dir.join("index.json");
    // Read the existing index first: a layout we cannot understand is left alone.
    let mut index = read_index(&index_path, output)?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(write_err(&blobs))?;
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        std::fs::write(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(write_err(&layout_file))?;
    }
    for layer in &image.layers {
        let digest = layer.digest();
        let target = blob_path(dir, &digest, output)?;
        if target.exists() {
            continue;
        }
        match &layer.location {
            BlobLocation::File(source) => {
                copy_verified(source, &target, &layer.digest()).map_err(write_err(&target))?
            }
            BlobLocation::Registry(_) => {
                return Err(SinkError::Invalid {
                    output: output.into(),
                    message: format!("layer {digest} was not downloaded"),
                })
            }
        }
    }
    for (digest, bytes) in [
        (&image.config_digest, &image.config),
        (&image.manifest_digest, &image.manifest),
    ] {
        let target = blob_path(dir, digest, output)?;
        if !target.exists() {
            write_atomically(&target, bytes).map_err(write_err(&target))?;
        }
    }

    let manifests = index["manifests"].as_array_mut().expect("read_index checked the list");
    let mut descriptor = json!({
        "mediaType": image.manifest_media_type,
        "digest": image.manifest_digest,
        "size": image.manifest.len(),
    });
    match tag {
        Some(tag) => {
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
            descriptor["annotations"] = json!({ REF_NAME: tag });
            manifests.push(descriptor);
        }
        None => {
            let known = manifests
                .iter()
                .any(|m| m["digest"] == image.manifest_digest.as_str() && m["annotations"][REF_NAME].is_null());
            if !known {
                manifests.push(descriptor);
            }
        }
    }
    write_atomically(&index_path, &canonical_json(&index)).map_err(write_err(&index_path))
}

fn blob_path(dir: &Path, digest: &str, output: &str) -> Result<PathBuf, SinkError> {
    layout_blob_path(dir, digest).ok_or_else(|| SinkError::Invalid {
        output: output.into(),
        message: format!("unsupported digest {digest}"),
    })
}

/// Copies a blob through a temp file, checking its digest on the way. Never a hard link: the
/// source may be a cache entry, and damage to an output must not reach the cache (nor damage
/// to the cache an output).
fn copy_verified(source: &Path, target: &Path, digest: &str) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = readable_temp_file(dir)?;
    let (got, _) = crate::oci::digest::copy_hashed(source, tmp.path())?;
    if got != digest {
        return Err(std::io::Error::other(format!(
            "{} should hold {digest} but holds {got}: it is damaged or was altered (a cache entry: build again with --no-cache)",
            source.display()
        )));
    }
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

/// A temp file in `dir` that becomes an output: mode 0666 under the umask, as other tools write
/// files (not tempfile's private 0600), so that other users and tools can read the output.
fn readable_temp_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".fnbuild-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = readable_temp_file(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

/// Writes a tarball that `docker load` takes (manifest.json) and that is also an OCI layout
/// (oci-layout, index.json), as `docker save` writes since Docker 25. A regular file appears
/// only when complete (a temp file renamed over it); a device, FIFO or `/dev/stdout` gets the
/// archive streamed into it, and is never replaced.
pub fn write_docker_archive(
    file: &Path,
    name: Option<&str>,
    image: &BuiltImage,
    mtime: u64,
    output: &str,
) -> Result<(), SinkError> {
    let write_err = |source| SinkError::Write {
        output: output.into(),
        path: file.into(),
        source,
    };
    if stream_target(file) {
        let target = std::fs::OpenOptions::new().write(true).open(file).map_err(write_err)?;
        let mut w = write_archive(std::io::BufWriter::new(target), file, name, image, mtime, output)?;
        return w.flush().map_err(write_err);
    }
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = readable_temp_file(dir).map_err(write_err)?;
    let tmp = write_archive(std::io::BufWriter::new(tmp), file, name, image, mtime, output)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    tmp.persist(file).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Hashes what is read through it.
struct Verifying<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: std::io::Read> Verifying<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest;
        Verifying {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn digest(self) -> String {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: std::io::Read> std::io::Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The archive's entries into `w`; returns it once the tar is complete.
fn write_archive<W: Write>(
    w: W,
    file: &Path,
    name: Option<&str>,
    image: &BuiltImage,
    mtime: u64,
    output: &str,
) -> Result<W, SinkError> {
    let write_err = |source| SinkError::Write {
        output: output.into(),
        path: file.into(),
        source,
    };
    let mut tar = tar::Builder::new(w);
    let blob_name = |digest: &str| format!("blobs/sha256/{}", digest_hex(digest).unwrap_or_default());
    let append = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn std::io::Read| {
        let mut header = tar::Header::new_ustar();
        header.set_path(path)?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, data)
    };
    let mut layer_names = Vec::new();
    for layer in &image.layers {
        let digest = layer.digest();
        let path = blob_name(&digest);
        if layer_names.contains(&path) {
            continue; // the same layer twice: one copy is enough
        }
        let BlobLocation::File(source) = &layer.location else {
            return Err(SinkError::Invalid {
                output: output.into(),
                message: format!("layer {digest} was not downloaded"),
            });
        };
        // A base layer read from a layout or an archive is checked as it is copied: a damaged or
        // altered blob fails the output instead of reaching every image made from it.
        let f = std::fs::File::open(source).map_err(write_err)?;
        let size = layer.descriptor.size();
        let actual = f.metadata().map_err(write_err)?.len();
        if actual != size {
            return Err(SinkError::Invalid {
                output: output.into(),
                message: format!(
                    "layer {digest} ({}) is {actual} bytes, its descriptor says {size}",
                    source.display()
                ),
            });
        }
        let mut reader = Verifying::new(f);
        append(&mut tar, &path, size, &mut reader).map_err(write_err)?;
        let got = reader.digest();
        if got != digest {
            return Err(SinkError::Invalid {
                output: output.into(),
                message: format!(
                    "layer {digest} ({}) holds {got}: it is damaged or was altered",
                    source.display()
                ),
            });
        }
        layer_names.push(path);
    }
    let all_layers: Vec<String> = image.layers.iter().map(|l| blob_name(&l.digest())).collect();
    let config_name = blob_name(&image.config_digest);
    append(
        &mut tar,
        &config_name,
        image.config.len() as u64,
        &mut &image.config[..],
    )
    .map_err(write_err)?;
    append(
        &mut tar,
        &blob_name(&image.manifest_digest),
        image.manifest.len() as u64,
        &mut &image.manifest[..],
    )
    .map_err(write_err)?;
    let manifest_json = canonical_json(&json!([{
        "Config": config_name,
        "RepoTags": name.map(|n| vec![n.to_string()]).unwrap_or_default(),
        "Layers": all_layers,
    }]));
    let mut index_entry =
        json!({"mediaType": image.manifest_media_type, "digest": image.manifest_digest, "size": image.manifest.len()});
    if let Some(n) = name {
        index_entry["annotations"] = json!({"io.containerd.image.name": n});
    }
    let index =
        canonical_json(&json!({"schemaVersion": 2, "mediaType": crate::oci::OCI_INDEX, "manifests": [index_entry]}));
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(&mut tar, "index.json", index.len() as u64, &mut &index[..]).map_err(write_err)?;
    append(
        &mut tar,
        "manifest.json",
        manifest_json.len() as u64,
        &mut &manifest_json[..],
    )
    .map_err(write_err)?;
    append(&mut tar, "oci-layout", layout.len() as u64, &mut &layout[..]).map_err(write_err)?;
    tar.into_inner().map_err(write_err)
}

/// Loads the image into the Docker daemon (see [`crate::daemon`]) as `name` (what `docker load` does).
pub async fn load_into_daemon(
    name: &str,
    image: &BuiltImage,
    mtime: u64,
    work: &Path,
    output: &str,
) -> Result<(), SinkError> {
    use futures_util::StreamExt;
    let docker_err = |message: String| SinkError::Docker {
        output: output.into(),
        message,
    };
    let archive = work.join("docker-load.tar");
    write_docker_archive(&archive, Some(name), image, mtime, output)?;
    let daemon = crate::daemon::connect().map_err(docker_err)?;
    let at = |e| format!("{}: {}", daemon.endpoint, daemon_message(e));
    let docker = &daemon.docker;
    docker.ping().await.map_err(|e| docker_err(at(e)))?;
    let file = tokio::fs::File::open(&archive)
        .await
        .map_err(|source| SinkError::Write {
            output: output.into(),
            path: archive.clone(),
            source,
        })?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut replies = docker.import_image_stream(options, body, None);
    while let Some(reply) = replies.next().await {
        reply.map_err(|e| docker_err(at(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_with_optional_tags_and_names() {
        assert!(matches!(
            "oci:out".parse().unwrap(),
            Output::OciLayout { tag: None, .. }
        ));
        assert!(matches!("oci:out:v1".parse().unwrap(), Output::OciLayout { tag: Some(ref t), .. } if t == "v1"));
        let archive: Output = "docker-archive:/tmp/a.tar:hello:v1".parse().unwrap();
        assert!(
            matches!(archive, Output::DockerArchive { name: Some(ref n), .. } if n == "docker.io/library/hello:v1")
        );
        assert!("oci:out:bad tag".parse::<Output>().is_err());
        assert!("tarball:x".parse::<Output>().is_err());
    }
}
