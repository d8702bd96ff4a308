//! OCI image layouts (`oci:DIR[:TAG]`): `oci-layout`, `index.json` and `blobs/sha256/`, read as a
//! base and written as an output (other tags in the layout are kept).

use super::{checked_digest, diff_ids, invalid, parse_config, parse_manifest, read_file, write_atomically};
use super::{ReadError, WriteError};
use crate::oci::digest::Digest;
use crate::oci::index::Built;
use crate::oci::platform::{self, Platform};
use crate::oci::referrers::{Artifact, EMPTY_BLOB};
use crate::oci::{canonical_json, BaseImage, BlobLocation, ImageLayer, DOCKER_LIST, OCI_INDEX};
use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The annotation that names a tag in a layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Path of a blob in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

fn read_blob(name: &str, dir: &Path, digest: &Digest) -> Result<Vec<u8>, ReadError> {
    let bytes = read_file(name, &blob_path(dir, digest))?;
    if Digest::of(&bytes) != *digest {
        return Err(invalid(
            name,
            format!("blob {digest} does not match its digest (corrupt layout)"),
        ));
    }
    Ok(bytes)
}

/// Reads the image `tag` names (or the only one) from the layout at `dir`; a tag that names an
/// index (a multi-platform image) gives `platform`'s image.
pub fn read(name: &str, dir: &Path, tag: Option<&str>, platform: &Platform) -> Result<BaseImage, ReadError> {
    let index = read_layout_index(name, dir)?;
    let descriptor = select_tagged(name, &index, tag)?;
    let mut media_type = descriptor.media_type().to_string();
    let mut manifest_digest = checked_digest(name, descriptor.digest())?;
    while matches!(media_type.as_str(), OCI_INDEX | DOCKER_LIST) {
        let nested: platform::IndexDoc = serde_json::from_slice(&read_blob(name, dir, &manifest_digest)?)
            .map_err(|e| invalid(name, format!("nested index is malformed: {e}")))?;
        let entry = platform::select(&nested, platform).map_err(|offered| {
            invalid(
                name,
                format!(
                    "no image for platform {platform} in the index (it has: {})",
                    offered.join(", ")
                ),
            )
        })?;
        manifest_digest = entry
            .digest
            .parse()
            .map_err(|e| invalid(name, format!("nested index: {e}")))?;
        media_type = entry.media_type.clone().unwrap_or_default();
    }
    let manifest_bytes = read_blob(name, dir, &manifest_digest)?;
    let (manifest, family) = parse_manifest(name, &manifest_bytes, &media_type)?;
    let config_bytes = read_blob(name, dir, &checked_digest(name, manifest.config().digest())?)?;
    let config = parse_config(name, &config_bytes)?;
    let diff_ids = diff_ids(name, &config, manifest.layers().len())?;
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = checked_digest(name, descriptor.digest())?;
        let path = blob_path(dir, &digest);
        if !path.is_file() {
            return Err(invalid(name, format!("layer {digest} is missing from the layout")));
        }
        layers.push(ImageLayer {
            descriptor: descriptor.clone(),
            digest,
            diff_id,
            location: BlobLocation::File(path),
        });
    }
    Ok(BaseImage {
        name: name.into(),
        manifest_digest,
        family,
        config,
        layers,
    })
}

fn read_layout_index(name: &str, dir: &Path) -> Result<ImageIndex, ReadError> {
    if !dir.join("oci-layout").is_file() {
        return Err(invalid(
            name,
            format!("{} is not an OCI image layout (no oci-layout file)", dir.display()),
        ));
    }
    serde_json::from_slice(&read_file(name, &dir.join("index.json"))?)
        .map_err(|e| invalid(name, format!("index.json is malformed: {e}")))
}

/// The platforms of the index `tag` names in the layout at `dir`, or `None` when it names a
/// single image.
pub fn platforms(name: &str, dir: &Path, tag: Option<&str>) -> Result<Option<Vec<Platform>>, ReadError> {
    let index = read_layout_index(name, dir)?;
    let descriptor = select_tagged(name, &index, tag)?;
    if !matches!(descriptor.media_type().to_string().as_str(), OCI_INDEX | DOCKER_LIST) {
        return Ok(None);
    }
    let nested: platform::IndexDoc =
        serde_json::from_slice(&read_blob(name, dir, &checked_digest(name, descriptor.digest())?)?)
            .map_err(|e| invalid(name, format!("nested index is malformed: {e}")))?;
    Ok(Some(platform::offered(&nested)))
}

fn select_tagged<'a>(name: &str, index: &'a ImageIndex, tag: Option<&str>) -> Result<&'a Descriptor, ReadError> {
    // Artifacts (an image's SBOMs) are listed too, so that tools find them: they are not images.
    let manifests: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| d.artifact_type().is_none())
        .collect();
    let tag_of = |d: &&Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    match tag {
        Some(tag) => manifests
            .iter()
            .copied()
            .find(|d| tag_of(d).as_deref() == Some(tag))
            .ok_or_else(|| {
                let tags: Vec<_> = manifests.iter().filter_map(tag_of).collect();
                invalid(
                    name,
                    format!("no image tagged '{tag}' in the layout (tags: {})", tags.join(", ")),
                )
            }),
        None if manifests.len() == 1 => Ok(manifests[0]),
        None if manifests.is_empty() => Err(invalid(name, "the layout holds no image")),
        None => {
            let tags: Vec<_> = manifests.iter().filter_map(tag_of).collect();
            Err(invalid(
                name,
                format!(
                    "the layout holds {} images; name one as oci:DIR:TAG (tags: {})",
                    manifests.len(),
                    tags.join(", ")
                ),
            ))
        }
    }
}

/// An output goes into a missing or empty directory or an existing layout, never into some
/// other directory.
pub fn check(dir: &Path, output: &str) -> Result<(), WriteError> {
    let invalid = |message: String| WriteError::Invalid {
        output: output.into(),
        message,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WriteError::Write {
            output: output.into(),
            path: dir.into(),
            source,
        }),
        Ok(m) if !m.is_dir() => Err(invalid(format!("{} is not a directory", dir.display()))),
        Ok(_) => {
            // Under the writers' lock: a build writing into this layout right now has it half made.
            let _lock = LayoutLock::take(dir).map_err(|source| WriteError::Write {
                output: output.into(),
                path: dir.into(),
                source,
            })?;
            let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
            if empty || dir.join("oci-layout").is_file() {
                read_index(&dir.join("index.json"), output).map(|_| ())
            } else {
                Err(invalid(format!(
                    "{} is neither empty nor an OCI layout (no oci-layout file); not touching it",
                    dir.display()
                )))
            }
        }
    }
}

/// A layout's index.json: an object with a manifests list (a new one when there is none yet).
/// Anything else is someone else's file, left alone.
fn read_index(path: &Path, output: &str) -> Result<Value, WriteError> {
    let invalid = |message: String| WriteError::Invalid {
        output: output.into(),
        message: format!("{}: {message}; not touching it", path.display()),
    };
    let index: Value = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not valid JSON ({e})")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(json!({"schemaVersion": 2, "manifests": []})),
        Err(source) => {
            return Err(WriteError::Write {
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
pub fn write(
    dir: &Path,
    tag: Option<&str>,
    built: &Built,
    referrers: &[Artifact],
    output: &str,
) -> Result<(), WriteError> {
    let created = !dir.exists();
    let result = add_to_layout(dir, tag, built, referrers, output);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn add_to_layout(
    dir: &Path,
    tag: Option<&str>,
    built: &Built,
    referrers: &[Artifact],
    output: &str,
) -> Result<(), WriteError> {
    let write_err = |path: &Path| {
        let (output, path) = (output.to_string(), path.to_path_buf());
        move |source| WriteError::Write { output, path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let _lock = LayoutLock::take(dir).map_err(write_err(dir))?;
    let index_path = dir.join("index.json");
    // Read the existing index first: a layout we cannot understand is left alone.
    let mut index = read_index(&index_path, output)?;
    // oci-layout first: a directory this writer has begun is a layout from its first entry on.
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        std::fs::write(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(write_err(&layout_file))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(write_err(&blobs))?;
    for layer in built.images().into_iter().flat_map(|i| &i.layers) {
        let target = blob_path(dir, &layer.digest);
        if target.exists() {
            continue;
        }
        match &layer.location {
            BlobLocation::File(source) => copy_verified(source, &target, &layer.digest).map_err(write_err(&target))?,
            BlobLocation::Registry(_) => {
                return Err(WriteError::Invalid {
                    output: output.into(),
                    message: format!("layer {} was not downloaded", layer.digest),
                })
            }
        }
    }
    // Each image's config and manifest, then the index over them: every blob a manifest names
    // is in place before the manifest.
    let mut documents: Vec<(&Digest, &[u8])> = Vec::new();
    for image in built.images() {
        documents.push((&image.config_digest, &image.config));
        documents.push((&image.manifest_digest, &image.manifest));
    }
    if let Built::Index(index) = built {
        documents.push((&index.digest, &index.bytes));
    }
    // Artifacts after the images they refer to: their documents, the empty config, manifests.
    let empty = Digest::of(EMPTY_BLOB);
    if !referrers.is_empty() {
        documents.push((&empty, EMPTY_BLOB));
    }
    for a in referrers {
        documents.push((&a.document_digest, &a.document));
        documents.push((&a.digest, &a.manifest));
    }
    for (digest, bytes) in documents {
        let target = blob_path(dir, digest);
        if !target.exists() {
            write_atomically(&target, bytes).map_err(write_err(&target))?;
        }
    }

    let manifests = index["manifests"].as_array_mut().expect("read_index checked the list");
    let mut descriptor = json!({
        "mediaType": built.media_type(),
        "digest": built.digest(),
        "size": built.bytes().len(),
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
                .any(|m| m["digest"] == built.digest().as_str() && m["annotations"][REF_NAME].is_null());
            if !known {
                manifests.push(descriptor);
            }
        }
    }
    for a in referrers {
        if !manifests.iter().any(|m| m["digest"] == a.digest.as_str()) {
            manifests.push(a.descriptor());
        }
    }
    write_atomically(&index_path, &canonical_json(&index)).map_err(write_err(&index_path))
}

/// Copies a blob through a temp file, checking its digest on the way. Never a hard link: the
/// source may be a cache entry, and damage to an output must not reach the cache (nor damage
/// to the cache an output).
fn copy_verified(source: &Path, target: &Path, digest: &Digest) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = super::readable_temp_file(dir)?;
    let (got, _) = crate::oci::digest::copy_hashed(source, tmp.path())?;
    if got != *digest {
        return Err(std::io::Error::other(format!(
            "{} should hold {digest} but holds {got}: it is damaged or was altered (a cache entry: build again with --no-cache)",
            source.display()
        )));
    }
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_not_a_layout_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let host = Platform::host();
        let err = read("oci:x", dir.path(), None, &host).unwrap_err().to_string();
        assert!(err.contains("is not an OCI image layout"), "{err}");
        std::fs::write(dir.path().join("oci-layout"), "{}").unwrap();
        std::fs::write(dir.path().join("index.json"), "{not json").unwrap();
        let err = read("oci:x", dir.path(), None, &host).unwrap_err().to_string();
        assert!(err.starts_with("base image oci:x: index.json is malformed"), "{err}");
    }
}
