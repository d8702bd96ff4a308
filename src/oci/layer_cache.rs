//! A local record of what each layer's inputs compress to, so an unchanged layer is neither
//! re-tarred nor re-compressed: the key hashes everything that decides the layer's bytes, and
//! the entry keeps the blob (hard-linked from the spool file where possible) with its digests.

use super::digest::Digest;
use super::layer::{Content, EntryKind, LayerEntry, WrittenLayer, COMPRESSION_LEVEL};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bumped whenever the layer writer's output for the same entries could change.
const FORMAT: &str = "fnbuild-layer-v2";

#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    digest: Digest,
    diff_id: Digest,
    size: u64,
    /// The blob's identity when it was last verified ([`super::digest::file_identity`]).
    #[serde(default)]
    file: Option<String>,
}

impl LayerCache {
    /// The cache under `root` (`<root>/layers`).
    pub fn new(root: &Path) -> LayerCache {
        LayerCache {
            dir: root.join("layers"),
        }
    }

    /// The key of a layer: hashes every entry's path, kind, mode and content, and the timestamp.
    /// Reading the files is far cheaper than compressing them. Unreadable files give no key,
    /// so the layer writer reports them.
    pub fn key(entries: &[LayerEntry], mtime: u64) -> Option<String> {
        let mut sorted: Vec<&LayerEntry> = entries.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        h.update(format!("{FORMAT}\0level={COMPRESSION_LEVEL}\0mtime={mtime}\0"));
        for entry in sorted {
            h.update(entry.path.as_bytes());
            match &entry.kind {
                EntryKind::Dir => h.update(b"\0dir\0"),
                EntryKind::Symlink { target } => {
                    h.update(b"\0symlink\0");
                    h.update(target.as_bytes());
                    h.update(b"\0");
                }
                EntryKind::File { content, executable } => {
                    h.update(if *executable {
                        &b"\0exec\0"[..]
                    } else {
                        &b"\0file\0"[..]
                    });
                    match content {
                        Content::Bytes(bytes) => {
                            h.update(bytes.len().to_le_bytes());
                            h.update(bytes);
                        }
                        Content::Path(path) => {
                            let mut file = std::fs::File::open(path).ok()?;
                            h.update(file.metadata().ok()?.len().to_le_bytes());
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = file.read(&mut buf).ok()?;
                                if n == 0 {
                                    break;
                                }
                                h.update(&buf[..n]);
                            }
                        }
                    }
                }
            }
        }
        Some(hex::encode(h.finalize()))
    }

    /// The cached layer for `key`, if its record and blob are both there and agree.
    pub fn get(&self, key: &str) -> Option<WrittenLayer> {
        let record_path = self.dir.join(format!("{key}.json"));
        let mut record: Record = serde_json::from_slice(&std::fs::read(&record_path).ok()?).ok()?;
        let file = self.dir.join(format!("{key}.blob"));
        if std::fs::metadata(&file).ok()?.len() != record.size {
            return None;
        }
        let (holds, identity) = super::digest::still_holds(&file, &record.digest, record.file.as_deref());
        if !holds {
            tracing::warn!(path = %file.display(), "cached layer is damaged; writing it again");
            let _ = std::fs::remove_file(&file);
            return None;
        }
        if identity != record.file {
            record.file = identity;
            let _ = write_record(&self.dir, &record_path, &record);
        }
        Some(WrittenLayer {
            file,
            digest: record.digest,
            diff_id: record.diff_id,
            size: record.size,
        })
    }

    /// Records a freshly written layer. Failures only cost a future re-compression, so they are logged, not returned.
    pub fn put(&self, key: &str, layer: &WrittenLayer) {
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let blob = self.dir.join(format!("{key}.blob"));
            let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            if std::fs::hard_link(&layer.file, tmp.path().with_extension("link")).is_ok() {
                std::fs::rename(tmp.path().with_extension("link"), &blob)?;
            } else {
                std::fs::copy(&layer.file, tmp.path())?;
                tmp.persist(&blob).map_err(|e| e.error)?;
            }
            let record = Record {
                digest: layer.digest.clone(),
                diff_id: layer.diff_id.clone(),
                size: layer.size,
                file: None,
            };
            write_record(&self.dir, &self.dir.join(format!("{key}.json")), &record)
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot record the layer in the cache");
        }
    }
}

fn write_record(dir: &Path, path: &Path, record: &Record) -> std::io::Result<()> {
    let mut rec = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut rec, record)?;
    rec.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer::write_layer;
    use std::borrow::Cow;

    fn entries(dir: &Path, content: &str) -> Vec<LayerEntry> {
        std::fs::write(dir.join("f.js"), content).unwrap();
        vec![
            LayerEntry {
                path: "app".into(),
                kind: EntryKind::Dir,
            },
            LayerEntry {
                path: "app/f.js".into(),
                kind: EntryKind::File {
                    content: Content::Path(dir.join("f.js")),
                    executable: false,
                },
            },
            LayerEntry {
                path: "app/g".into(),
                kind: EntryKind::File {
                    content: Content::Bytes(Cow::Borrowed(b"g")),
                    executable: true,
                },
            },
        ]
    }

    #[test]
    fn keys_follow_content_mode_and_time_but_not_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let a = LayerCache::key(&entries(dir.path(), "one"), 1).unwrap();
        assert_eq!(a, LayerCache::key(&entries(dir.path(), "one"), 1).unwrap());
        assert_ne!(a, LayerCache::key(&entries(dir.path(), "two"), 1).unwrap());
        assert_ne!(a, LayerCache::key(&entries(dir.path(), "one"), 2).unwrap());
        let mut exec = entries(dir.path(), "one");
        exec[1].kind = EntryKind::File {
            content: Content::Path(dir.path().join("f.js")),
            executable: true,
        };
        assert_ne!(a, LayerCache::key(&exec, 1).unwrap());
    }

    #[test]
    fn a_recorded_layer_comes_back_with_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(&dir.path().join("cache"));
        let e = entries(dir.path(), "x");
        let key = LayerCache::key(&e, 1).unwrap();
        assert!(cache.get(&key).is_none());
        let layer = write_layer(e, 1, &dir.path().join("spool")).unwrap();
        cache.put(&key, &layer);
        std::fs::remove_file(&layer.file).unwrap();
        let hit = cache.get(&key).unwrap();
        assert_eq!(
            (hit.digest.clone(), hit.diff_id.clone(), hit.size),
            (layer.digest, layer.diff_id, layer.size)
        );
        assert_eq!(
            crate::oci::digest::sha256_digest(&std::fs::read(&hit.file).unwrap()),
            hit.digest
        );
    }
}
