//! Where finished dependency layers are kept, by key:
//!
//! - locally, under `<cache dir>/dependencies/`: `keys/<key>.json` (digest, diffID, size) and the
//!   compressed blob at `blobs/sha256/<hex>` (blobs are shared by keys that give the same bytes);
//! - in a registry repository (`--cache-repo`), as a one-layer image tagged by the key, whose
//!   manifest annotations carry the key and the layer's diffID. A push to the same registry then
//!   mounts the blob from there instead of uploading it.
//!
//! The caches are an optimisation: a cache that cannot be read or written is a warning, never a
//! failed build. Nothing secret is in an entry: the key hashes no credentials file.

use crate::oci::digest::Digest;
use crate::oci::layer::WrittenLayer;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{canonical_json, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::registry::{sha256_digest, BlobSource, Client, PushBlob, PushManifest, RegistryError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const KEY_ANNOTATION: &str = "dev.fnbuild.dependencies.key";
pub const DIFF_ID_ANNOTATION: &str = "dev.fnbuild.dependencies.diff-id";
/// HMAC-SHA256 of the entry (key, layer digest, diffID, size) under the builders' shared key:
/// whoever can push to the cache repository but does not hold the key cannot make an entry
/// that a build takes.
pub const SIGNATURE_ANNOTATION: &str = "dev.fnbuild.dependencies.signature";

/// The signature of a cache entry.
pub fn sign(signing_key: &[u8], key: &str, digest: &str, diff_id: &str, size: u64) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key).expect("HMAC takes keys of any length");
    mac.update(format!("fnbuild-dependency-cache-v1\0{key}\0{digest}\0{diff_id}\0{size}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn signature_holds(signing_key: &[u8], signature: &str, key: &str, digest: &str, diff_id: &str, size: u64) -> bool {
    use hmac::Mac;
    let Ok(bytes) = hex::decode(signature) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key).expect("HMAC takes keys of any length");
    mac.update(format!("fnbuild-dependency-cache-v1\0{key}\0{digest}\0{diff_id}\0{size}").as_bytes());
    mac.verify_slice(&bytes).is_ok()
}
/// Spool files older than this in `tmp/` are from builds that died; they are removed.
const STALE_SPOOL: Duration = Duration::from_secs(24 * 3600);

/// A local cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: String,
    digest: Digest,
    diff_id: Digest,
    size: u64,
    runtime: String,
    installer: String,
    /// The blob's identity when it was last verified ([`crate::oci::digest::file_identity`]).
    #[serde(default)]
    file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
}

impl LocalCache {
    /// The cache under `root` (`<root>/dependencies`).
    pub fn new(root: &Path) -> LocalCache {
        LocalCache {
            dir: root.join("dependencies"),
        }
    }

    /// Where probed installer versions are remembered.
    pub fn installers_dir(&self) -> PathBuf {
        self.dir.join("installers")
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{key}.json"))
    }

    fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.dir.join("blobs/sha256").join(digest.hex()))
    }

    /// The layer recorded for `key`, if its record and blob are both there and agree in size.
    pub fn get(&self, key: &str) -> Option<WrittenLayer> {
        let mut record: Record = serde_json::from_slice(&std::fs::read(self.record_path(key)).ok()?).ok()?;
        let file = self.blob_path(&record.digest)?;
        let size = std::fs::metadata(&file).ok()?.len();
        let (holds, identity) = if size == record.size && record.key == key {
            crate::oci::digest::still_holds(&file, &record.digest, record.file.as_deref())
        } else {
            (false, None)
        };
        if !holds {
            tracing::warn!(path = %file.display(), "dependency cache entry is damaged; installing again");
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(self.record_path(key));
            return None;
        }
        if identity != record.file {
            record.file = identity;
            let _ = self.write_record(key, &record);
        }
        Some(WrittenLayer {
            file,
            digest: record.digest,
            diff_id: record.diff_id,
            size,
        })
    }

    /// A fresh path to write a layer to, on the cache's file system (so `put` is a rename).
    pub fn spool(&self) -> std::io::Result<PathBuf> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            let now = SystemTime::now();
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_SPOOL);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let name = format!(
            "layer-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        Ok(tmp.join(name))
    }

    /// Records a freshly written layer and returns it with its file now inside the cache.
    pub fn put(
        &self,
        key: &str,
        layer: &WrittenLayer,
        runtime: &str,
        installer: &str,
    ) -> std::io::Result<WrittenLayer> {
        let blob = self
            .blob_path(&layer.digest)
            .ok_or_else(|| std::io::Error::other(format!("unsupported digest {}", layer.digest)))?;
        std::fs::create_dir_all(blob.parent().expect("blob path has a parent"))?;
        if layer.file.parent() == Some(self.dir.join("tmp").as_path()) {
            std::fs::rename(&layer.file, &blob)?;
        } else {
            let mut tmp = tempfile::NamedTempFile::new_in(blob.parent().expect("parent"))?;
            std::io::copy(&mut std::fs::File::open(&layer.file)?, tmp.as_file_mut())?;
            tmp.persist(&blob).map_err(|e| e.error)?;
        }
        let record = Record {
            key: key.into(),
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            size: layer.size,
            runtime: runtime.into(),
            installer: installer.into(),
            file: crate::oci::digest::file_identity(&blob),
        };
        self.write_record(key, &record)?;
        Ok(WrittenLayer {
            file: blob,
            ..layer.clone()
        })
    }

    fn write_record(&self, key: &str, record: &Record) -> std::io::Result<()> {
        let keys = self.dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let mut rec = tempfile::NamedTempFile::new_in(&keys)?;
        serde_json::to_writer(&mut rec, record)?;
        rec.persist(self.record_path(key)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The tag of a key in the cache repository: `<runtime>-<key>` (at most 128 characters).
pub fn tag(runtime: &str, key: &str) -> String {
    let runtime: String = runtime
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let runtime = runtime.trim_start_matches(['.', '-']);
    if runtime.is_empty() {
        key.to_string()
    } else {
        format!("{runtime}-{key}")
    }
}

/// A layer found in the cache repository.
#[derive(Debug, Clone)]
pub struct RegistryLayer {
    pub reference: Reference,
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
}

/// The layer tagged for `key` in `repo`, if there is one (`Ok(None)`: not there).
pub async fn registry_get(
    client: &Client,
    repo: &Reference,
    tag: &str,
    key: &str,
    signing_key: &[u8],
) -> Result<Option<RegistryLayer>, RegistryError> {
    let reference = repo.with_tag(tag);
    let pulled = match client.pull_manifest(&reference).await {
        Ok(p) => p,
        Err(RegistryError::ManifestUnknown { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let manifest: Value = match serde_json::from_slice(&pulled.bytes) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let annotations = &manifest["annotations"];
    let layers = manifest["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let (Some(found_key), Some(diff_id), [layer]) = (
        annotations[KEY_ANNOTATION].as_str(),
        annotations[DIFF_ID_ANNOTATION].as_str(),
        layers,
    ) else {
        tracing::warn!(reference = %reference, "not a dependency cache image; ignoring it");
        return Ok(None);
    };
    let (Some(digest), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) else {
        return Ok(None);
    };
    let (Ok(digest_checked), Ok(diff_id_checked)) = (digest.parse::<Digest>(), diff_id.parse::<Digest>()) else {
        tracing::warn!(reference = %reference, "dependency cache entry names digests that are not sha256; ignoring it");
        return Ok(None);
    };
    if found_key != key {
        return Ok(None);
    }
    let signed = annotations[SIGNATURE_ANNOTATION]
        .as_str()
        .is_some_and(|sig| signature_holds(signing_key, sig, key, digest, diff_id, size));
    if !signed {
        tracing::warn!(reference = %reference, "dependency cache entry has no valid signature (not made by a builder holding the cache key); installing instead");
        return Ok(None);
    }
    Ok(Some(RegistryLayer {
        reference,
        digest: digest_checked,
        diff_id: diff_id_checked,
        size,
    }))
}

/// Pushes the layer (from a file, or mounted from elsewhere) as a one-layer image tagged for `key`.
#[allow(clippy::too_many_arguments)]
pub async fn registry_put(
    client: &Client,
    repo: &Reference,
    tag: &str,
    key: &str,
    digest: &Digest,
    diff_id: &Digest,
    size: u64,
    source: BlobSource,
    platform: &Platform,
    runtime: &str,
    created: &str,
    signing_key: &[u8],
) -> Result<Reference, RegistryError> {
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": format!("fnbuild: {runtime} dependencies") }],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    let config = canonical_json(&config);
    let config_digest = sha256_digest(&config);
    let manifest = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size }],
        "annotations": {
            KEY_ANNOTATION: key,
            DIFF_ID_ANNOTATION: diff_id,
            SIGNATURE_ANNOTATION: sign(signing_key, key, digest.as_str(), diff_id.as_str(), size),
            "org.opencontainers.image.created": created,
        },
    }));
    let blobs = vec![
        PushBlob {
            digest: digest.to_string(),
            size,
            source,
        },
        PushBlob {
            digest: config_digest,
            size: config.len() as u64,
            source: BlobSource::Bytes(config),
        },
    ];
    let reference = repo.with_tag(tag);
    let report = client
        .push(
            std::slice::from_ref(&reference),
            blobs,
            PushManifest {
                bytes: manifest,
                media_type: OCI_MANIFEST.into(),
            },
            None,
        )
        .await?;
    tracing::info!(cache = %reference, requests = report.requests, bytes = report.bytes_uploaded, "dependency layer stored in the cache repository");
    Ok(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer::{write_layer, Content, EntryKind, LayerEntry};
    use std::borrow::Cow;

    #[test]
    fn a_stored_layer_comes_back_by_key_and_blobs_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::new(dir.path());
        assert!(cache.get("k1").is_none());
        let entries = vec![LayerEntry {
            path: "a".into(),
            kind: EntryKind::File {
                content: Content::Bytes(Cow::Borrowed(b"x")),
                executable: false,
            },
        }];
        let spool = cache.spool().unwrap();
        let layer = write_layer(entries, 1, &spool).unwrap();
        let stored = cache.put("k1", &layer, "nodejs20", "npm 1").unwrap();
        assert!(!spool.exists(), "the spool file was moved into the cache");
        let hit = cache.get("k1").unwrap();
        assert_eq!((hit.digest.as_str(), hit.size), (layer.digest.as_str(), layer.size));
        assert_eq!(hit.file, stored.file);
        assert_eq!(sha256_digest(&std::fs::read(&hit.file).unwrap()), layer.digest);

        // A second key with the same bytes (from outside the cache) shares the blob.
        let outside = dir.path().join("elsewhere");
        std::fs::copy(&hit.file, &outside).unwrap();
        cache
            .put(
                "k2",
                &WrittenLayer {
                    file: outside,
                    ..layer.clone()
                },
                "nodejs20",
                "npm 1",
            )
            .unwrap();
        assert_eq!(cache.get("k2").unwrap().file, hit.file);
        assert_eq!(
            std::fs::read_dir(dir.path().join("dependencies/blobs/sha256"))
                .unwrap()
                .count(),
            1
        );

        // A blob damaged in place (same size) is a miss, and is dropped.
        let mut bytes = std::fs::read(&hit.file).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&hit.file, &bytes).unwrap();
        assert!(cache.get("k1").is_none());
        assert!(!hit.file.exists());
    }

    #[test]
    fn tags_are_valid() {
        let key = "a".repeat(64);
        assert_eq!(tag("nodejs20", &key), format!("nodejs20-{key}"));
        assert_eq!(tag("my runtime!", &key), format!("my-runtime--{key}"));
        assert_eq!(tag("..", &key), key);
        assert!(tag(&"x".repeat(100), &key).len() <= 128);
    }
}
