//! Where images are read from and written to: one [`Location`] type in skopeo's transport syntax
//! for `--base` and `--output` alike, and a module per format that holds both directions
//! (`layout`: OCI image layouts, `archive`: `docker save` tarballs, `daemon`: a Docker engine,
//! `registry`: a registry through [`crate::registry::Client`]). The pipeline reads its base with
//! [`read`] and writes every output, pushes included, with [`write`].

pub mod archive;
pub mod daemon;
pub mod layout;
pub mod registry;

use crate::oci::digest::{Digest, DigestError};
use crate::oci::index::{Built, BuiltIndex};
use crate::oci::layer::LayerError;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{BaseImage, Family};
use crate::registry::Client;
use oci_spec::image::ImageManifest;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An image location as the user wrote it: `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`,
/// `docker-daemon:NAME:TAG` or `docker://REF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    OciLayout { dir: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf, name: Option<String> },
    DockerDaemon { name: String },
    Registry(Reference),
}

const LOCATIONS: &str = "oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:NAME:TAG or docker://REF";

impl Location {
    /// A base image: any location, or a bare registry reference (`node:22-slim`), as Docker takes it.
    pub fn base(s: &str) -> Result<Location, String> {
        match Location::parse(s, false)? {
            Some(location) => Ok(location),
            None => s
                .parse()
                .map(Location::Registry)
                .map_err(|e| format!("'{s}': {e} (other locations: {LOCATIONS})")),
        }
    }

    /// An output: a location with its transport named (a bare name is too easily a file name),
    /// and tags and names that registries and Docker accept.
    pub fn output(s: &str) -> Result<Location, String> {
        Location::parse(s, true)?.ok_or_else(|| format!("'{s}': write {LOCATIONS}"))
    }

    /// `None` when `s` names no transport.
    fn parse(s: &str, output: bool) -> Result<Option<Location>, String> {
        let Some((transport, rest)) = s.split_once(':') else {
            return Ok(None);
        };
        let needs = |what: &str| Err(format!("'{s}': {transport}: needs {what}"));
        let reference = |r: &str| r.parse::<Reference>().map_err(|e| format!("'{s}': {e}"));
        let location = match transport {
            "oci" => {
                let (dir, tag) = split_suffix(rest);
                if dir.is_empty() {
                    return needs("a directory, as in oci:DIR[:TAG]");
                }
                if let (true, Some(t)) = (output, tag) {
                    if crate::oci::reference::validate_tag(t).is_err() {
                        return Err(format!(
                            "'{s}': '{t}' is not a valid tag (letters, digits, _ . -; at most 128)"
                        ));
                    }
                }
                Location::OciLayout {
                    dir: dir.into(),
                    tag: tag.map(String::from),
                }
            }
            "docker-archive" => {
                let (file, name) = split_suffix(rest);
                if file.is_empty() {
                    return needs("a file, as in docker-archive:FILE[:NAME:TAG]");
                }
                Location::DockerArchive {
                    file: file.into(),
                    name: name.map(|n| reference(n).map(|r| r.to_string())).transpose()?,
                }
            }
            "docker-daemon" if rest.is_empty() => return needs("an image name, as in docker-daemon:NAME:TAG"),
            // The daemon names its own images; a base may be an image ID, an output must be a name.
            "docker-daemon" if output => Location::DockerDaemon {
                name: reference(rest)?.to_string(),
            },
            "docker-daemon" => Location::DockerDaemon { name: rest.into() },
            "docker" => {
                let r = rest
                    .strip_prefix("//")
                    .ok_or_else(|| format!("'{s}': write docker://REFERENCE"))?;
                Location::Registry(reference(r)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(location))
    }

    pub fn is_registry(&self) -> bool {
        matches!(self, Location::Registry(_))
    }
}

/// `PATH[:SUFFIX]`, split at the first colon.
fn split_suffix(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(':') {
        Some((p, s)) => (p, Some(s)),
        None => (rest, None),
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    /// As a base image ([`Location::base`]).
    fn from_str(s: &str) -> Result<Self, String> {
        Location::base(s)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Location::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Location::DockerArchive { file, name: Some(n) } => write!(f, "docker-archive:{}:{n}", file.display()),
            Location::DockerArchive { file, name: None } => write!(f, "docker-archive:{}", file.display()),
            Location::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            Location::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
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
        // Boxed: a registry error is large, and every read returns a ReadError.
        source: Box<crate::registry::RegistryError>,
    },
    #[error("base image {name}: the Docker daemon at {message}")]
    Docker { name: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
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
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Reads the base image at `location` (for `platform`, when it is an index). `work` is a
/// scratch directory that outlives the build (layers that have to be compressed first are
/// spooled there).
pub async fn read(
    location: &Location,
    platform: &Platform,
    work: &Path,
    client: Option<&Client>,
) -> Result<BaseImage, ReadError> {
    let name = location.to_string();
    let blocking = |task: Box<dyn FnOnce() -> Result<BaseImage, ReadError> + Send>| async {
        tokio::task::spawn_blocking(task)
            .await
            .map_err(|e| ReadError::Invalid {
                name: name.clone(),
                message: e.to_string(),
            })?
    };
    match location {
        Location::OciLayout { dir, tag } => layout::read(&name, dir, tag.as_deref(), platform),
        Location::DockerArchive { file, name: image } => {
            let (n, file, image, work) = (name.clone(), file.clone(), image.clone(), work.to_path_buf());
            blocking(Box::new(move || archive::read(&n, &file, image.as_deref(), &work))).await
        }
        Location::DockerDaemon { name: image } => {
            let file = work.join("docker-daemon-export.tar");
            daemon::export(&name, image, &file).await?;
            let (n, work) = (name.clone(), work.to_path_buf());
            blocking(Box::new(move || archive::read(&n, &file, None, &work))).await
        }
        Location::Registry(reference) => {
            let client = client.ok_or_else(|| invalid(&name, "no registry client was set up"))?;
            registry::read(&name, reference, platform, client).await
        }
    }
}

/// The platforms of the index at `location`, or `None` when it holds one image (an archive or
/// the daemon always do).
pub async fn platforms(location: &Location, client: Option<&Client>) -> Result<Option<Vec<Platform>>, ReadError> {
    let name = location.to_string();
    match location {
        Location::OciLayout { dir, tag } => layout::platforms(&name, dir, tag.as_deref()),
        Location::DockerArchive { .. } | Location::DockerDaemon { .. } => Ok(None),
        Location::Registry(reference) => {
            let client = client.ok_or_else(|| invalid(&name, "no registry client was set up"))?;
            client
                .index_platforms(reference)
                .await
                .map_err(|source| ReadError::Registry {
                    name,
                    source: Box::new(source),
                })
        }
    }
}

/// Checks, before any work, that `output` can be written where it says (see each format's `check`).
pub fn check(output: &Location) -> Result<(), WriteError> {
    let name = output.to_string();
    match output {
        Location::OciLayout { dir, .. } => layout::check(dir, &name),
        Location::DockerArchive { file, .. } => archive::check(file, &name),
        Location::DockerDaemon { .. } | Location::Registry(_) => Ok(()),
    }
}

/// Whether `file` can be written: opened for appending when it exists (nothing is changed), else
/// its directory must exist and be writable.
pub fn check_writable_file(file: &Path) -> std::io::Result<()> {
    if file.exists() {
        return std::fs::OpenOptions::new().append(true).open(file).map(|_| ());
    }
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path; access() only reads it.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What writing one output came to (`outputs` in `build --json`).
#[derive(Debug, Serialize)]
pub struct OutputSummary {
    pub output: String,
    /// `registry/repository@digest` for pushes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_uploaded: Option<u64>,
    /// For pushes: what happened to each blob (`existed`, `mounted`, `uploaded`, `copied`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobSummary>,
}

#[derive(Debug, Serialize)]
pub struct BlobSummary {
    pub digest: String,
    pub outcome: &'static str,
}

impl OutputSummary {
    fn written(output: String) -> OutputSummary {
        OutputSummary {
            output,
            image: None,
            http_requests: None,
            bytes_uploaded: None,
            blobs: vec![],
        }
    }
}

/// What every output's writer may need besides the image.
pub struct WriteContext<'a> {
    pub client: Option<&'a Client>,
    /// The timestamp of entries in archives.
    pub epoch: u64,
    pub work: &'a Path,
    /// Blobs that another repository of a push's registry holds (the dependency cache): mounted
    /// from there rather than uploaded.
    pub mount_from: &'a [(Digest, Reference)],
    /// Artifacts that refer to the images (SBOMs, provenance): attached after the images in registries
    /// and OCI layouts; other outputs cannot hold them.
    pub referrers: &'a [crate::oci::referrers::Artifact],
    /// Signs what a push puts in a registry (cosign signatures), when given.
    pub signer: Option<&'a crate::attest::keys::SigningKey>,
}

/// Writes `built` to every output. Files and the daemon come first and pushes last, so nothing
/// is published when a local output fails; the tags of one repository go in one push. An output
/// that holds one image takes one of an index's: a docker-archive this machine's platform's, the
/// Docker engine its own (in either case the first image when the index has not that one).
pub async fn write(
    outputs: &[Location],
    built: &Built,
    ctx: &WriteContext<'_>,
) -> Result<Vec<OutputSummary>, WriteError> {
    let mut summaries = Vec::new();
    // Outputs other than registries need every blob on disk: every image's for a layout or the
    // Docker engine (whose platform is known only once it is asked), this machine's for an archive.
    let every = outputs
        .iter()
        .any(|o| matches!(o, Location::OciLayout { .. } | Location::DockerDaemon { .. }));
    let single = outputs.iter().any(|o| matches!(o, Location::DockerArchive { .. }));
    let local = match (built, every, single) {
        (_, false, false) => None,
        (Built::Index(index), true, _) => {
            let mut images = Vec::new();
            for (platform, image) in &index.images {
                images.push((
                    platform.clone(),
                    registry::download_base_layers(image, ctx.client, ctx.work).await?,
                ));
            }
            Some(Built::Index(BuiltIndex::new(images)))
        }
        (built, _, _) => Some(Built::Image(
            registry::download_base_layers(built.image_for(&Platform::host()), ctx.client, ctx.work).await?,
        )),
    };
    for output in outputs {
        if output.is_registry() {
            continue;
        }
        let name = output.to_string();
        let local = local.as_ref().expect("downloaded for every local output");
        match output {
            Location::OciLayout { dir, tag } => layout::write(dir, tag.as_deref(), local, ctx.referrers, &name)?,
            Location::DockerArchive { file, name: image_name } => archive::write(
                file,
                image_name.as_deref(),
                local.image_for(&Platform::host()),
                ctx.epoch,
                &name,
            )?,
            Location::DockerDaemon { name: image_name } => {
                daemon::load(image_name, local, ctx.epoch, ctx.work, &name).await?
            }
            Location::Registry(_) => unreachable!("pushed below"),
        }
        tracing::info!(output = %name, "written");
        summaries.push(OutputSummary::written(name));
    }
    for targets in registry::push_groups(outputs) {
        summaries.extend(registry::push(&targets, built, ctx).await?);
    }
    Ok(summaries)
}

fn invalid(name: &str, message: impl Into<String>) -> ReadError {
    ReadError::Invalid {
        name: name.into(),
        message: message.into(),
    }
}

fn read_file(name: &str, path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError::Read {
        name: name.into(),
        path: path.into(),
        source,
    })
}

/// A descriptor's digest, which must be sha256 for anything here to verify it.
fn checked_digest(name: &str, digest: &oci_spec::image::Digest) -> Result<Digest, ReadError> {
    digest
        .to_string()
        .parse()
        .map_err(|e: DigestError| invalid(name, format!("unsupported digest: {e}")))
}

fn parse_manifest(name: &str, bytes: &[u8], descriptor_type: &str) -> Result<(ImageManifest, Family), ReadError> {
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

fn parse_config(name: &str, bytes: &[u8]) -> Result<Value, ReadError> {
    let config: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(name, format!("config is malformed: {e}")))?;
    if !config.is_object() {
        return Err(invalid(name, "config is not a JSON object"));
    }
    Ok(config)
}

fn diff_ids(name: &str, config: &Value, layers: usize) -> Result<Vec<Digest>, ReadError> {
    let ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| invalid(name, "config has no rootfs.diff_ids"))?
        .iter()
        .filter_map(Value::as_str)
        .map(|s| {
            s.parse()
                .map_err(|e: DigestError| invalid(name, format!("config rootfs.diff_ids: {e}")))
        })
        .collect::<Result<Vec<Digest>, ReadError>>()?;
    if ids.len() != layers {
        return Err(invalid(
            name,
            format!("config lists {} layers but the manifest {}", ids.len(), layers),
        ));
    }
    Ok(ids)
}

/// Whether `file` is something to write into rather than replace: a device, a FIFO, a socket
/// (`/dev/stdout` resolves to one of them), followed through symlinks.
fn stream_target(file: &Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| !m.is_file() && !m.is_dir())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_like_skopeo() {
        let oci = Location::base("oci:/tmp/x:20").unwrap();
        assert_eq!(
            oci,
            Location::OciLayout {
                dir: "/tmp/x".into(),
                tag: Some("20".into())
            }
        );
        assert!(matches!(
            Location::base("oci:rel").unwrap(),
            Location::OciLayout { tag: None, .. }
        ));
        assert!(matches!(
            Location::base("docker-archive:/a.tar").unwrap(),
            Location::DockerArchive { name: None, .. }
        ));
        assert!(
            matches!(Location::base("docker-daemon:node:20").unwrap(), Location::DockerDaemon { ref name } if name == "node:20")
        );
        assert!(matches!(
            Location::base("docker://node:20-slim").unwrap(),
            Location::Registry(_)
        ));
        assert!(matches!(Location::base("node:20-slim").unwrap(), Location::Registry(_)));
        assert!(Location::base("oci:").is_err());
        assert!(Location::base("docker:node").is_err());
        assert!(Location::base("docker-daemon:").is_err());
    }

    #[test]
    fn outputs_take_every_transport_and_name_it() {
        assert!(matches!(
            Location::output("oci:out").unwrap(),
            Location::OciLayout { tag: None, .. }
        ));
        assert!(
            matches!(Location::output("oci:out:v1").unwrap(), Location::OciLayout { tag: Some(ref t), .. } if t == "v1")
        );
        let archive = Location::output("docker-archive:/tmp/a.tar:hello:v1").unwrap();
        assert!(
            matches!(archive, Location::DockerArchive { name: Some(ref n), .. } if n == "docker.io/library/hello:v1")
        );
        let daemon = Location::output("docker-daemon:hello:v1").unwrap();
        assert_eq!(daemon.to_string(), "docker-daemon:docker.io/library/hello:v1");
        let push = Location::output("docker://127.0.0.1:5000/fn/hello:v1").unwrap();
        assert_eq!(push.to_string(), "docker://127.0.0.1:5000/fn/hello:v1");
        assert!(Location::output("oci:out:bad tag").is_err());
        let err = Location::output("tarball:x").unwrap_err();
        assert!(err.contains("docker://REF"), "{err}");
        // A bare name is a base's shorthand only.
        assert!(Location::output("out").is_err());
        assert!(Location::output("docker-daemon:Bad Name").is_err());
    }
}
