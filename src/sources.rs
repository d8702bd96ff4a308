//! Where base images come from, named with the containers-transports syntax skopeo uses:
//! `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker-daemon:NAME:TAG`, and `docker://REF` or a bare
//! reference for a registry.

use crate::oci::digest::{digest_hex, sha256_digest};
use crate::oci::layer::{compress_tar, LayerError};
use crate::oci::{BaseImage, BlobLocation, Family, ImageLayer, DOCKER_LAYER_GZIP, DOCKER_LIST, OCI_INDEX};
use crate::oci::reference::Reference;
use crate::registry::Client;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image location as the user wrote it.
#[derive(Debug, Clone)]
pub enum ImageLocation {
    OciLayout { dir: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf },
    DockerDaemon { name: String },
    Registry(Reference),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceImageError {
    #[error("base image {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("base image {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("base image {name}: {source}")]
    Layer { name: String, source: LayerError },
    #[error("base image {name}: {source}")]
    Registry {
        name: String,
        source: crate::registry::RegistryError,
    },
    #[error("base image {name}: the Docker daemon at {message}")]
    Docker { name: String, message: String },
}

impl std::str::FromStr for ImageLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (transport, rest) = s.split_once(':').unwrap_or(("", s));
        match transport {
            "oci" => {
                let (dir, tag) = match rest.split_once(':') {
                    Some((d, t)) => (d, Some(t.to_string())),
                    None => (rest, None),
                };
                if dir.is_empty() {
                    return Err(format!("'{s}': oci: needs a directory, as in oci:DIR[:TAG]"));
                }
                Ok(ImageLocation::OciLayout { dir: dir.into(), tag })
            }
            "docker-archive" if !rest.is_empty() => Ok(ImageLocation::DockerArchive { file: rest.into() }),
            "docker-daemon" if !rest.is_empty() => Ok(ImageLocation::DockerDaemon { name: rest.into() }),
            "docker" => {
                let r = rest
                    .strip_prefix("//")
                    .ok_or_else(|| format!("'{s}': write docker://REFERENCE"))?;
                r.parse()
                    .map(ImageLocation::Registry)
                    .map_err(|e| format!("'{s}': {e}"))
            }
            "docker-archive" | "docker-daemon" => Err(format!("'{s}': {transport}: needs a file or image name")),
            _ => s.parse().map(ImageLocation::Registry).map_err(|e| {
                format!("'{s}': {e} (other locations: oci:DIR[:TAG], docker-archive:FILE, docker-daemon:NAME:TAG)")
            }),
        }
    }
}

impl std::fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageLocation::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageLocation::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageLocation::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
            ImageLocation::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            ImageLocation::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Reads the base image at `location`. `work` is a scratch directory that outlives the build
/// (layers that have to be compressed first are spooled there).
pub async fn load_base(
    location: &ImageLocation,
    work: &Path,
    client: Option<&Client>,
) -> Result<BaseImage, SourceImageError> {
    let name = location.to_string();
    match location {
        ImageLocation::OciLayout { dir, tag } => read_oci_layout(&name, dir, tag.as_deref()),
        ImageLocation::DockerArchive { file } => {
            let (name2, file2, work2) = (name.clone(), file.clone(), work.to_path_buf());
            tokio::task::spawn_blocking(move || read_docker_archive(&name2, &file2, &work2))
                .await
                .map_err(|e| SourceImageError::Invalid {
                    name,
                    message: e.to_string(),
                })?
        }
        ImageLocation::DockerDaemon { name: image } => {
            let archive = work.join("docker-daemon-export.tar");
            export_from_daemon(&name, image, &archive).await?;
            let (name2, work2) = (name.clone(), work.to_path_buf());
            tokio::task::spawn_blocking(move || read_docker_archive(&name2, &archive, &work2))
                .await
                .map_err(|e| SourceImageError::Invalid {
                    name,
                    message: e.to_string(),
                })?
        }
        ImageLocation::Registry(reference) => {
            let client = client.ok_or_else(|| invalid(&name, "no registry client was set up"))?;
            read_registry(&name, reference, client).await
        }
    }
}

fn invalid(name: &str, message: impl Into<String>) -> SourceImageError {
    SourceImageError::Invalid {
        name: name.into(),
        message: message.into(),
    }
}

fn read_file(name: &str, path: &Path) -> Result<Vec<u8>, SourceImageError> {
    std::fs::read(path).map_err(|source| SourceImageError::Read {
        name: name.into(),
        path: path.into(),
        source,
    })
}

/// Path of a blob in an OCI layout, refusing digests that are not plain sha256.
pub fn layout_blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    Some(dir.join("blobs/sha256").join(digest_hex(digest)?))
}

fn read_layout_blob(name: &str, dir: &Path, digest: &str) -> Result<Vec<u8>, SourceImageError> {
    let path = layout_blob_path(dir, digest).ok_or_else(|| invalid(name, format!("unsupported digest {digest}")))?;
    let bytes = read_file(name, &path)?;
    if sha256_digest(&bytes) != digest {
        return Err(invalid(
            name,
            format!("blob {digest} does not match its digest (corrupt layout)"),
        ));
    }
    Ok(bytes)
}

fn read_oci_layout(name: &str, dir: &Path, tag: Option<&str>) -> Result<BaseImage, SourceImageError> {
    if !dir.join("oci-layout").is_file() {
        return Err(invalid(
            name,
            format!("{} is not an OCI image layout (no oci-layout file)", dir.display()),
        ));
    }
    let index: ImageIndex = serde_json::from_slice(&read_file(name, &dir.join("index.json"))?)
        .map_err(|e| invalid(name, format!("index.json is malformed: {e}")))?;
    let descriptor = select_tagged(name, &index, tag)?;
    let mut descriptor = descriptor.clone();
    // A tag may name an index (a multi-platform image): take this machine's platform.
    while matches!(descriptor.media_type().to_string().as_str(), OCI_INDEX | DOCKER_LIST) {
        let nested: ImageIndex =
            serde_json::from_slice(&read_layout_blob(name, dir, &descriptor.digest().to_string())?)
                .map_err(|e| invalid(name, format!("nested index is malformed: {e}")))?;
        descriptor = select_platform(name, &nested)?.clone();
    }
    let manifest_digest = descriptor.digest().to_string();
    let manifest_bytes = read_layout_blob(name, dir, &manifest_digest)?;
    let (manifest, family) = parse_manifest(name, &manifest_bytes, &descriptor.media_type().to_string())?;
    let config_bytes = read_layout_blob(name, dir, &manifest.config().digest().to_string())?;
    let config = parse_config(name, &config_bytes)?;
    let diff_ids = diff_ids(name, &config, manifest.layers().len())?;
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = descriptor.digest().to_string();
        let path =
            layout_blob_path(dir, &digest).ok_or_else(|| invalid(name, format!("unsupported digest {digest}")))?;
        if !path.is_file() {
            return Err(invalid(name, format!("layer {digest} is missing from the layout")));
        }
        layers.push(ImageLayer {
            descriptor: descriptor.clone(),
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

fn select_tagged<'a>(name: &str, index: &'a ImageIndex, tag: Option<&str>) -> Result<&'a Descriptor, SourceImageError> {
    let manifests = index.manifests();
    let tag_of = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    match tag {
        Some(tag) => manifests
            .iter()
            .find(|d| tag_of(d).as_deref() == Some(tag))
            .ok_or_else(|| {
                let tags: Vec<_> = manifests.iter().filter_map(tag_of).collect();
                invalid(
                    name,
                    format!("no image tagged '{tag}' in the layout (tags: {})", tags.join(", ")),
                )
            }),
        None if manifests.len() == 1 => Ok(&manifests[0]),
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

fn select_platform<'a>(name: &str, index: &'a ImageIndex) -> Result<&'a Descriptor, SourceImageError> {
    let arch = crate::oci::platform::Platform::default();
    index
        .manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                arch.matches(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                )
            })
        })
        .ok_or_else(|| invalid(name, format!("no image for platform {arch} in the index")))
}

fn parse_manifest(
    name: &str,
    bytes: &[u8],
    descriptor_type: &str,
) -> Result<(ImageManifest, Family), SourceImageError> {
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(name, format!("manifest is malformed: {e}")))?;
    let media_type = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| descriptor_type.to_string());
    let family = Family::of_manifest(&media_type)
        .ok_or_else(|| invalid(name, format!("unsupported manifest type {media_type}")))?;
    Ok((manifest, family))
}

fn parse_config(name: &str, bytes: &[u8]) -> Result<Value, SourceImageError> {
    let config: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(name, format!("config is malformed: {e}")))?;
    if !config.is_object() {
        return Err(invalid(name, "config is not a JSON object"));
    }
    Ok(config)
}

fn diff_ids(name: &str, config: &Value, layers: usize) -> Result<Vec<String>, SourceImageError> {
    let ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| invalid(name, "config has no rootfs.diff_ids"))?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if ids.len() != layers {
        return Err(invalid(
            name,
            format!("config lists {} layers but the manifest {}", ids.len(), layers),
        ));
    }
    Ok(ids)
}

/// A `docker save` archive: `manifest.json` naming the config and the layers (uncompressed tars,
/// or gzip-compressed ones). Layers are compressed here with our own compressor, so the same
/// archive always gives the same layer digests.
fn read_docker_archive(name: &str, file: &Path, work: &Path) -> Result<BaseImage, SourceImageError> {
    let open = || {
        std::fs::File::open(file).map_err(|source| SourceImageError::Read {
            name: name.into(),
            path: file.into(),
            source,
        })
    };
    let not_archive = |e: std::io::Error| invalid(name, format!("{} is not a docker-archive tar: {e}", file.display()));
    // Pass 1: the small JSON files.
    let mut small = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(open()?);
    for entry in archive.entries().map_err(not_archive)? {
        let mut entry = entry.map_err(not_archive)?;
        let path = entry.path().map_err(not_archive)?.to_string_lossy().into_owned();
        if path == "manifest.json" || path.ends_with(".json") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(not_archive)?;
            small.insert(path, bytes);
        }
    }
    let manifest_json = small
        .get("manifest.json")
        .ok_or_else(|| invalid(name, "no manifest.json in the archive"))?;
    let entries: Value =
        serde_json::from_slice(manifest_json).map_err(|e| invalid(name, format!("manifest.json is malformed: {e}")))?;
    let entry = match entries.as_array().map(Vec::as_slice) {
        Some([one]) => one,
        Some([]) | None => return Err(invalid(name, "manifest.json lists no image")),
        Some(_) => return Err(invalid(name, "the archive holds several images; save just one")),
    };
    let config_path = entry["Config"]
        .as_str()
        .ok_or_else(|| invalid(name, "manifest.json has no Config"))?;
    let config_bytes = small
        .get(config_path)
        .ok_or_else(|| invalid(name, format!("{config_path} is missing")))?;
    let config = parse_config(name, config_bytes)?;
    let layer_paths: Vec<String> = entry["Layers"]
        .as_array()
        .ok_or_else(|| invalid(name, "manifest.json has no Layers"))?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let ids = diff_ids(name, &config, layer_paths.len())?;

    // Pass 2: each layer, compressed (or copied if already gzip) into a spool file.
    let mut written = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(open()?);
    for tar_entry in archive.entries().map_err(not_archive)? {
        let mut tar_entry = tar_entry.map_err(not_archive)?;
        let path = tar_entry.path().map_err(not_archive)?.to_string_lossy().into_owned();
        if !layer_paths.contains(&path) || written.contains_key(&path) {
            continue;
        }
        let spool = work.join(format!("base-layer-{}", written.len()));
        let mut head = [0u8; 2];
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut tar_entry);
        let peek = std::io::BufRead::fill_buf(&mut reader).map_err(not_archive)?;
        head[..peek.len().min(2)].copy_from_slice(&peek[..peek.len().min(2)]);
        let layer = if head == [0x1f, 0x8b] {
            let mut gz = flate2::read::MultiGzDecoder::new(reader);
            compress_tar(&mut gz, &spool)
        } else {
            compress_tar(&mut reader, &spool)
        }
        .map_err(|source| SourceImageError::Layer {
            name: name.into(),
            source,
        })?;
        written.insert(path, layer);
    }
    let mut layers = Vec::new();
    for (path, diff_id) in layer_paths.iter().zip(ids) {
        let layer = written
            .get(path)
            .ok_or_else(|| invalid(name, format!("layer {path} is missing")))?;
        if layer.diff_id != diff_id {
            return Err(invalid(
                name,
                format!("layer {path} does not match its diff_id {diff_id}"),
            ));
        }
        let descriptor = DescriptorBuilder::default()
            .media_type(MediaType::Other(DOCKER_LAYER_GZIP.into()))
            .digest(crate::oci::parse_digest(&layer.digest).map_err(|e| invalid(name, e.to_string()))?)
            .size(layer.size)
            .build()
            .map_err(|e| invalid(name, e.to_string()))?;
        layers.push(ImageLayer {
            descriptor,
            diff_id,
            location: BlobLocation::File(layer.file.clone()),
        });
    }
    Ok(BaseImage {
        name: name.into(),
        // A docker archive has no manifest; the config digest is the image's identity.
        manifest_digest: sha256_digest(config_bytes),
        family: Family::Docker,
        config,
        layers,
    })
}

async fn export_from_daemon(name: &str, image: &str, archive: &Path) -> Result<(), SourceImageError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let docker_err = |message: String| SourceImageError::Docker {
        name: name.into(),
        message,
    };
    let daemon = crate::daemon::connect().map_err(docker_err)?;
    let at = |e| format!("{}: {}", daemon.endpoint, daemon_message(e));
    let docker = &daemon.docker;
    docker.inspect_image(image).await.map_err(|e| docker_err(at(e)))?;
    let mut file = tokio::fs::File::create(archive)
        .await
        .map_err(|source| SourceImageError::Read {
            name: name.into(),
            path: archive.into(),
            source,
        })?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| docker_err(at(e)))?;
        file.write_all(&chunk).await.map_err(|source| SourceImageError::Read {
            name: name.into(),
            path: archive.into(),
            source,
        })?;
    }
    file.flush().await.map_err(|source| SourceImageError::Read {
        name: name.into(),
        path: archive.into(),
        source,
    })?;
    Ok(())
}

/// bollard's errors, as one line a person can act on.
pub fn daemon_message(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("{message} (HTTP {status_code})")
        }
        bollard::errors::Error::HyperLegacyError { .. } | bollard::errors::Error::IOError { .. } => {
            format!("cannot reach it ({e}); is dockerd running and DOCKER_HOST right?")
        }
        other => other.to_string(),
    }
}

async fn read_registry(name: &str, reference: &Reference, client: &Client) -> Result<BaseImage, SourceImageError> {
    let registry_err = |source| SourceImageError::Registry {
        name: name.into(),
        source,
    };
    let pulled = client.pull_manifest(reference).await.map_err(registry_err)?;
    let (manifest, family) = parse_manifest(name, &pulled.bytes, &pulled.media_type)?;
    let config_bytes = client
        .fetch_blob(
            reference,
            &manifest.config().digest().to_string(),
            manifest.config().size(),
        )
        .await
        .map_err(registry_err)?;
    let config = parse_config(name, &config_bytes)?;
    let ids = diff_ids(name, &config, manifest.layers().len())?;
    let repository = reference.with_digest(&pulled.digest);
    let layers = manifest
        .layers()
        .iter()
        .zip(ids)
        .map(|(descriptor, diff_id)| ImageLayer {
            descriptor: descriptor.clone(),
            diff_id,
            location: BlobLocation::Registry(repository.clone()),
        })
        .collect();
    Ok(BaseImage {
        name: reference.to_string(),
        manifest_digest: pulled.digest,
        family,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_like_skopeo() {
        let oci: ImageLocation = "oci:/tmp/x:20".parse().unwrap();
        assert!(
            matches!(oci, ImageLocation::OciLayout { ref dir, tag: Some(ref t) } if dir == Path::new("/tmp/x") && t == "20")
        );
        assert!(matches!(
            "oci:rel".parse().unwrap(),
            ImageLocation::OciLayout { tag: None, .. }
        ));
        assert!(matches!(
            "docker-archive:/a.tar".parse().unwrap(),
            ImageLocation::DockerArchive { .. }
        ));
        assert!(
            matches!("docker-daemon:node:20".parse().unwrap(), ImageLocation::DockerDaemon { ref name } if name == "node:20")
        );
        assert!(matches!(
            "docker://node:20-slim".parse().unwrap(),
            ImageLocation::Registry(_)
        ));
        assert!(matches!("node:20-slim".parse().unwrap(), ImageLocation::Registry(_)));
        assert!("oci:".parse::<ImageLocation>().is_err());
        assert!("docker:node".parse::<ImageLocation>().is_err());
    }

    #[test]
    fn a_directory_that_is_not_a_layout_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_oci_layout("oci:x", dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("is not an OCI image layout"), "{err}");
        std::fs::write(dir.path().join("oci-layout"), "{}").unwrap();
        std::fs::write(dir.path().join("index.json"), "{not json").unwrap();
        let err = read_oci_layout("oci:x", dir.path(), None).unwrap_err().to_string();
        assert!(err.starts_with("base image oci:x: index.json is malformed"), "{err}");
    }
}
