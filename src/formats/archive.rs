//! `docker save` tarballs (`docker-archive:FILE[:NAME:TAG]`): read as a base (layers compressed
//! here, so one archive always gives the same digests) and written as an output that `docker
//! load` takes and that is also an OCI layout, as Docker 25's `docker save` writes.

use super::{diff_ids, invalid, parse_config, readable_temp_file, stream_target, ReadError, WriteError};
use crate::oci::digest::Digest;
use crate::oci::layer::compress_tar;
use crate::oci::{canonical_json, BaseImage, BlobLocation, BuiltImage, Family, ImageLayer, DOCKER_LAYER_GZIP};
use oci_spec::image::{DescriptorBuilder, MediaType};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;

/// Reads the image in the archive at `file` (the one tagged `name`, when the archive holds
/// several). Layers are uncompressed tars or gzip-compressed ones, spooled to `work` compressed
/// with our own compressor.
pub fn read(name: &str, file: &Path, image: Option<&str>, work: &Path) -> Result<BaseImage, ReadError> {
    let open = || {
        std::fs::File::open(file).map_err(|source| ReadError::Read {
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
    let entries = entries.as_array().map(Vec::as_slice).unwrap_or_default();
    let entry = match (entries, image) {
        ([], _) => return Err(invalid(name, "manifest.json lists no image")),
        (_, Some(image)) => entries
            .iter()
            .find(|e| {
                e["RepoTags"].as_array().is_some_and(|tags| {
                    tags.iter().filter_map(Value::as_str).any(|t| {
                        t.parse::<crate::oci::reference::Reference>()
                            .is_ok_and(|r| r.to_string() == image)
                    })
                })
            })
            .ok_or_else(|| invalid(name, format!("no image tagged {image} in the archive")))?,
        ([one], None) => one,
        (_, None) => return Err(invalid(name, "the archive holds several images; save just one")),
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
        .map_err(|source| ReadError::Layer {
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
            digest: layer.digest.clone(),
            diff_id,
            location: BlobLocation::File(layer.file.clone()),
        });
    }
    Ok(BaseImage {
        name: name.into(),
        // A docker archive has no manifest; the config digest is the image's identity.
        manifest_digest: Digest::of(config_bytes),
        family: Family::Docker,
        config,
        layers,
    })
}

/// An archive goes into an existing directory, or into a device, FIFO or `/dev/stdout`.
pub fn check(file: &Path, output: &str) -> Result<(), WriteError> {
    let invalid = |message: String| WriteError::Invalid {
        output: output.into(),
        message,
    };
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

/// Writes the archive, tagged `name` if given. A regular file appears only when complete (a temp
/// file renamed over it); a device, FIFO or `/dev/stdout` gets the archive streamed into it, and
/// is never replaced.
pub fn write(file: &Path, name: Option<&str>, image: &BuiltImage, mtime: u64, output: &str) -> Result<(), WriteError> {
    let write_err = |source| WriteError::Write {
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
    inner: crate::oci::digest::HashingWriter<std::io::Sink>,
    reader: R,
}

impl<R: Read> Verifying<R> {
    fn new(reader: R) -> Self {
        Verifying {
            inner: crate::oci::digest::HashingWriter::new(std::io::sink()),
            reader,
        }
    }

    fn digest(self) -> Digest {
        self.inner.finish().1
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.inner.write_all(&buf[..n])?;
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
) -> Result<W, WriteError> {
    let write_err = |source| WriteError::Write {
        output: output.into(),
        path: file.into(),
        source,
    };
    let mut tar = tar::Builder::new(w);
    let blob_name = |digest: &Digest| format!("blobs/sha256/{}", digest.hex());
    let append = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| {
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
        let digest = &layer.digest;
        let path = blob_name(digest);
        if layer_names.contains(&path) {
            continue; // the same layer twice: one copy is enough
        }
        let BlobLocation::File(source) = &layer.location else {
            return Err(WriteError::Invalid {
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
            return Err(WriteError::Invalid {
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
        if got != *digest {
            return Err(WriteError::Invalid {
                output: output.into(),
                message: format!(
                    "layer {digest} ({}) holds {got}: it is damaged or was altered",
                    source.display()
                ),
            });
        }
        layer_names.push(path);
    }
    let all_layers: Vec<String> = image.layers.iter().map(|l| blob_name(&l.digest)).collect();
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
