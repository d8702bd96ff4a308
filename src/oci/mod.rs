//! The image model: a base image's manifest, config and layers, plus the layers we add,
//! serialised to canonical JSON (sorted keys, no insignificant white space).

pub mod digest;
pub mod gzip;
pub mod index;
pub mod layer;
pub mod layer_cache;
pub mod platform;
pub mod reference;
pub mod referrers;

use crate::oci::reference::Reference;
use digest::{Digest, DigestError};
use layer::WrittenLayer;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Media-type family of an image: the layers we add match the base's, as registries and
/// older runtimes dislike manifests that mix the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Oci,
    Docker,
}

impl Family {
    pub fn of_manifest(media_type: &str) -> Option<Family> {
        match media_type {
            OCI_MANIFEST => Some(Family::Oci),
            DOCKER_MANIFEST => Some(Family::Docker),
            _ => None,
        }
    }
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Family::Oci => OCI_MANIFEST,
            Family::Docker => DOCKER_MANIFEST,
        }
    }
    pub fn config_media_type(self) -> &'static str {
        match self {
            Family::Oci => OCI_CONFIG,
            Family::Docker => DOCKER_CONFIG,
        }
    }
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Family::Oci => OCI_LAYER_GZIP,
            Family::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

/// Where the bytes of a blob can be read.
#[derive(Debug, Clone)]
pub enum BlobLocation {
    /// A file holding exactly the blob (an OCI layout's blob, or a layer we wrote).
    File(PathBuf),
    /// A repository in a registry that has the blob.
    Registry(Reference),
}

#[derive(Debug, Clone)]
pub struct ImageLayer {
    /// The manifest's descriptor for the layer (media type, digest, size, annotations, urls).
    pub descriptor: Descriptor,
    /// The descriptor's digest, checked to be sha256.
    pub digest: Digest,
    pub diff_id: Digest,
    pub location: BlobLocation,
}

impl ImageLayer {
    pub fn new(descriptor: Descriptor, diff_id: Digest, location: BlobLocation) -> Result<ImageLayer, DigestError> {
        Ok(ImageLayer {
            digest: descriptor.digest().to_string().parse()?,
            descriptor,
            diff_id,
            location,
        })
    }
}

/// A base image as read from any source.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// How the user named it (for the base-name annotation).
    pub name: String,
    pub manifest_digest: Digest,
    pub family: Family,
    pub config: Value,
    pub layers: Vec<ImageLayer>,
}

/// An image under construction.
#[derive(Debug, Clone)]
pub struct Image {
    pub family: Family,
    pub config: Value,
    pub layers: Vec<ImageLayer>,
    /// Manifest annotations (OCI manifests only: Docker's schema 2 has none).
    pub annotations: BTreeMap<String, String>,
}

/// A finished image: manifest and config serialised, every blob located.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<ImageLayer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the base image's config is not a JSON object with a `rootfs`")]
    BadConfig,
    #[error("cannot make the image manifest: {0}")]
    Manifest(String),
}

impl Image {
    pub fn from_base(base: &BaseImage) -> Image {
        Image {
            family: base.family,
            config: base.config.clone(),
            layers: base.layers.clone(),
            annotations: BTreeMap::new(),
        }
    }

    /// The `config` object of the image config (Env, Entrypoint, ...), created if absent.
    pub fn run_config(&mut self) -> &mut Map<String, Value> {
        let root = self.config.as_object_mut().expect("image config is an object");
        let entry = root.entry("config").or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        entry.as_object_mut().expect("object")
    }

    /// Sets `name=value` in Env, replacing an earlier value of the same name.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let env = self.run_config().entry("Env").or_insert_with(|| json!([]));
        if !env.is_array() {
            *env = json!([]);
        }
        let list = env.as_array_mut().expect("array");
        let prefix = format!("{name}=");
        list.retain(|v| !v.as_str().is_some_and(|s| s.starts_with(&prefix)));
        list.push(Value::String(format!("{name}={value}")));
    }

    pub fn set_label(&mut self, name: &str, value: &str) {
        let labels = self.run_config().entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels
            .as_object_mut()
            .expect("object")
            .insert(name.into(), Value::String(value.into()));
    }

    /// Appends a layer we wrote, with its history entry.
    pub fn append_layer(&mut self, layer: &WrittenLayer, created: &str, created_by: &str) -> Result<(), ImageError> {
        let descriptor = DescriptorBuilder::default()
            .media_type(MediaType::Other(self.family.layer_media_type().into()))
            .digest(parse_digest(&layer.digest)?)
            .size(layer.size)
            .build()
            .map_err(|e| ImageError::Manifest(e.to_string()))?;
        let root = self.config.as_object_mut().ok_or(ImageError::BadConfig)?;
        let diff_ids = root
            .get_mut("rootfs")
            .and_then(|r| r.get_mut("diff_ids"))
            .and_then(Value::as_array_mut)
            .ok_or(ImageError::BadConfig)?;
        diff_ids.push(Value::String(layer.diff_id.to_string()));
        let history = root.entry("history").or_insert_with(|| json!([]));
        if let Some(h) = history.as_array_mut() {
            h.push(json!({ "created": created, "created_by": created_by }));
        }
        self.layers.push(ImageLayer {
            descriptor,
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            location: BlobLocation::File(layer.file.clone()),
        });
        Ok(())
    }

    /// Serialises config and manifest canonically and computes their digests.
    pub fn finish(self) -> Result<BuiltImage, ImageError> {
        let config = canonical_json(&self.config);
        let config_digest = Digest::of(&config);
        let config_descriptor = DescriptorBuilder::default()
            .media_type(MediaType::Other(self.family.config_media_type().into()))
            .digest(parse_digest(&config_digest)?)
            .size(config.len() as u64)
            .build()
            .map_err(|e| ImageError::Manifest(e.to_string()))?;
        let manifest_media_type = self.family.manifest_media_type();
        let mut builder = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::Other(manifest_media_type.into()))
            .config(config_descriptor)
            .layers(self.layers.iter().map(|l| l.descriptor.clone()).collect::<Vec<_>>());
        if self.family == Family::Oci && !self.annotations.is_empty() {
            builder = builder.annotations(
                self.annotations
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        let manifest = builder.build().map_err(|e| ImageError::Manifest(e.to_string()))?;
        let manifest = serde_json::to_value(&manifest).map_err(|e| ImageError::Manifest(e.to_string()))?;
        let manifest = canonical_json(&manifest);
        Ok(BuiltImage {
            manifest_digest: Digest::of(&manifest),
            manifest,
            manifest_media_type: manifest_media_type.into(),
            config,
            config_digest,
            layers: self.layers,
        })
    }
}

pub fn parse_digest(digest: &Digest) -> Result<oci_spec::image::Digest, ImageError> {
    digest
        .as_str()
        .parse()
        .map_err(|e| ImageError::Manifest(format!("bad digest {digest}: {e}")))
}

/// JSON with object keys sorted at every level and no white space: the same value always gives
/// the same bytes, whatever order a map iterated in.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<_> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value always serialises")
}

/// RFC 3339 time of a Unix timestamp, as image configs carry it.
pub fn rfc3339(epoch_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":null}}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_764_000_000), "2025-11-24T16:00:00Z");
    }

    fn base() -> BaseImage {
        BaseImage {
            name: "test".into(),
            manifest_digest: Digest::of(b"m"),
            family: Family::Oci,
            config: json!({"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=1"]},"rootfs":{"type":"layers","diff_ids":[]}}),
            layers: vec![],
        }
    }

    #[test]
    fn env_values_replace_earlier_ones_of_the_same_name() {
        let mut image = Image::from_base(&base());
        image.set_env("A", "2");
        image.set_env("B", "3");
        assert_eq!(image.config["config"]["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
    }

    #[test]
    fn appended_layers_reach_config_history_and_manifest() {
        let mut image = Image::from_base(&base());
        let layer = WrittenLayer {
            file: "/x".into(),
            digest: Digest::of(b"blob"),
            diff_id: Digest::of(b"tar"),
            size: 4,
        };
        image
            .append_layer(&layer, "1970-01-01T00:00:01Z", "fnbuild: test")
            .unwrap();
        image
            .annotations
            .insert("org.opencontainers.image.created".into(), "1970-01-01T00:00:01Z".into());
        let built = image.finish().unwrap();
        let config: Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], json!([Digest::of(b"tar").to_string()]));
        assert_eq!(config["history"][0]["created_by"], "fnbuild: test");
        let manifest: Value = serde_json::from_slice(&built.manifest).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(
            manifest["config"]["digest"],
            Value::String(built.config_digest.to_string())
        );
        assert_eq!(manifest["layers"][0]["digest"], Value::String(layer.digest.to_string()));
        assert_eq!(manifest["layers"][0]["mediaType"], OCI_LAYER_GZIP);
        assert_eq!(built.manifest_digest, Digest::of(&built.manifest));
    }
}
