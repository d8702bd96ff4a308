//! A local record of the blobs a repository is known to hold, written after each successful push
//! from this machine. On the next push, blobs in the record skip their HEAD, and small blobs not
//! in it (new content since the last push: a changed source layer, the config) go straight to
//! upload. Registries check every blob a manifest references when it is put, so a stale record
//! (a registry wiped or garbage-collected) shows up as MANIFEST_BLOB_UNKNOWN, and the push is
//! then done again the careful way, with the record dropped.
//!
//! Also recorded: registries that answered `GET /v2/` with no authentication challenge, and
//! over which scheme. A push to one of them starts with its first real request instead of that
//! probe; should the registry have changed (now asking for credentials, or gone), the transport
//! forgets the record and probes as usual.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Blobs up to this size that the record does not know are uploaded without asking first:
/// one round trip costs more than sending them again in the rare case they were there.
pub const SMALL_BLOB: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct KnownBlobs {
    file: Option<PathBuf>,
    /// None: no record for this repository (never pushed from here, or no cache).
    digests: Option<HashSet<String>>,
}

impl KnownBlobs {
    pub fn load(cache_dir: Option<&Path>, registry: &str, repository: &str) -> KnownBlobs {
        let Some(dir) = cache_dir else {
            return KnownBlobs::default();
        };
        let name = hex::encode(Sha256::digest(format!("{registry}/{repository}")));
        let file = dir.join("pushed").join(name);
        let digests = std::fs::read_to_string(&file).ok().map(|text| {
            text.lines()
                .filter(|l| l.starts_with("sha256:"))
                .map(String::from)
                .collect()
        });
        KnownBlobs {
            file: Some(file),
            digests,
        }
    }

    /// Whether the last push from here left `digest` in the repository.
    pub fn contains(&self, digest: &str) -> bool {
        self.digests.as_ref().is_some_and(|d| d.contains(digest))
    }

    /// Whether there is a record at all (so a blob missing from it is new content).
    pub fn exists(&self) -> bool {
        self.digests.is_some()
    }

    pub fn forget(&mut self) {
        self.digests = None;
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Records the blobs of a successful push (failures only cost HEADs next time).
    pub fn save<'a>(&self, digests: impl IntoIterator<Item = &'a str>) {
        let Some(file) = &self.file else { return };
        let mut all: Vec<&str> = digests.into_iter().collect();
        if let Some(old) = &self.digests {
            all.extend(old.iter().map(String::as_str));
        }
        all.sort_unstable();
        all.dedup();
        let result = (|| -> std::io::Result<()> {
            let dir = file.parent().expect("record files live in a directory");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, (all.join("\n") + "\n").as_bytes())?;
            tmp.persist(file).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot record the pushed blobs");
        }
    }
}

fn open_registry_file(cache_dir: &Path, host: &str) -> PathBuf {
    cache_dir
        .join("open-registries")
        .join(hex::encode(Sha256::digest(host.as_bytes())))
}

/// The base URL (`http://127.0.0.1:5000/`) of a registry last seen open, without credentials.
pub fn open_registry(cache_dir: Option<&Path>, host: &str) -> Option<reqwest::Url> {
    let text = std::fs::read_to_string(open_registry_file(cache_dir?, host)).ok()?;
    reqwest::Url::parse(text.trim()).ok()
}

pub fn remember_open_registry(cache_dir: Option<&Path>, host: &str, base: &reqwest::Url) {
    let Some(dir) = cache_dir else { return };
    let file = open_registry_file(dir, host);
    if open_registry(Some(dir), host).as_ref() == Some(base) {
        return;
    }
    let result = (|| -> std::io::Result<()> {
        let parent = file.parent().expect("record files live in a directory");
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        std::io::Write::write_all(&mut tmp, base.as_str().as_bytes())?;
        tmp.persist(&file).map_err(|e| e.error)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot record the registry's scheme");
    }
}

pub fn forget_open_registry(cache_dir: Option<&Path>, host: &str) {
    if let Some(dir) = cache_dir {
        let _ = std::fs::remove_file(open_registry_file(dir, host));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_record_is_found_per_repository_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let d1 = format!("sha256:{}", "1".repeat(64));
        let none = KnownBlobs::load(Some(dir.path()), "r:5000", "team/app");
        assert!(!none.exists() && !none.contains(&d1));
        none.save([d1.as_str()]);
        let mut known = KnownBlobs::load(Some(dir.path()), "r:5000", "team/app");
        assert!(known.exists() && known.contains(&d1));
        assert!(!KnownBlobs::load(Some(dir.path()), "r:5000", "team/other").exists());
        known.forget();
        assert!(!KnownBlobs::load(Some(dir.path()), "r:5000", "team/app").exists());
        assert!(!KnownBlobs::load(None, "r:5000", "team/app").exists());
    }

    #[test]
    fn open_registries_are_remembered_per_host_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let base = reqwest::Url::parse("http://127.0.0.1:5000/").unwrap();
        assert_eq!(open_registry(Some(dir.path()), "127.0.0.1:5000"), None);
        remember_open_registry(Some(dir.path()), "127.0.0.1:5000", &base);
        assert_eq!(open_registry(Some(dir.path()), "127.0.0.1:5000"), Some(base));
        assert_eq!(open_registry(Some(dir.path()), "127.0.0.1:5001"), None);
        forget_open_registry(Some(dir.path()), "127.0.0.1:5000");
        assert_eq!(open_registry(Some(dir.path()), "127.0.0.1:5000"), None);
    }
}
