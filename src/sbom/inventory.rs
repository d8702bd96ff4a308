//! The packages a layer holds, read from the layer itself (what the image really carries, not
//! what a lock file asked for): npm's `node_modules/<name>/package.json` files, with the hash
//! and origin npm recorded in `node_modules/.package-lock.json`, and Python's
//! `<name>.dist-info/METADATA`. Read once per layer digest and kept under the cache directory,
//! so that a cached dependency layer's packages are cached with it.

use super::{Ecosystem, Package};
use crate::oci::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bump when what is read from a layer changes: older records are read again.
const FORMAT: u32 = 1;
/// The most bytes read of one metadata file (a package.json or METADATA is a few kilobytes;
/// a hostile one may be anything).
const MAX_METADATA: u64 = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format: u32,
    packages: Vec<Package>,
}

/// Where inventories are kept: `<cache dir>/sbom/<layer digest hex>.json`.
#[derive(Debug, Clone)]
pub struct InventoryCache {
    dir: PathBuf,
}

impl InventoryCache {
    pub fn new(cache_root: &Path) -> InventoryCache {
        InventoryCache {
            dir: cache_root.join("sbom"),
        }
    }

    fn path(&self, layer: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", layer.hex()))
    }

    pub fn get(&self, layer: &Digest) -> Option<Vec<Package>> {
        let bytes = std::fs::read(self.path(layer)).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        (record.format == FORMAT).then_some(record.packages)
    }

    /// Best effort: an inventory that cannot be kept is read again next time.
    pub fn put(&self, layer: &Digest, packages: &[Package]) {
        let record = Record {
            format: FORMAT,
            packages: packages.to_vec(),
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::fs::write(tmp.path(), serde_json::to_vec(&record)?)?;
            tmp.persist(self.path(layer)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!(error = %e, "cannot keep the layer's package inventory");
        }
    }
}

/// The packages in the gzip-compressed layer `blob`, sorted by path.
pub fn read_layer(blob: &Path) -> std::io::Result<Vec<Package>> {
    let file = std::fs::File::open(blob)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut npm = Vec::new();
    let mut locks: BTreeMap<String, LockEntry> = BTreeMap::new();
    let mut python = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        let kind = match classify(&path) {
            Some(k) => k,
            None => continue,
        };
        let mut bytes = Vec::new();
        (&mut entry).take(MAX_METADATA).read_to_end(&mut bytes)?;
        match kind {
            Kind::PackageJson(dir) => npm.extend(npm_package(&dir, &bytes)),
            Kind::NpmLock(node_modules) => locks.extend(npm_lock(&node_modules, &bytes)),
            Kind::Metadata(dir) => python.extend(python_package(&dir, &bytes)),
        }
    }
    for p in &mut npm {
        if let Some(lock) = locks.get(&p.path) {
            p.sha512 = lock.sha512.clone();
            p.download = lock.resolved.clone();
        }
    }
    let mut packages: Vec<Package> = npm.into_iter().chain(python).collect();
    packages.sort_by(|a, b| a.path.cmp(&b.path));
    packages.dedup_by(|a, b| a.path == b.path);
    Ok(packages)
}

enum Kind {
    /// A package's directory, `…/node_modules/[@scope/]name`.
    PackageJson(String),
    /// The `node_modules` directory whose hidden lock file this is.
    NpmLock(String),
    /// A `.dist-info` directory.
    Metadata(String),
}

fn classify(path: &str) -> Option<Kind> {
    if let Some(dir) = path.strip_suffix("/package.json") {
        let (parent, name) = dir.rsplit_once('/')?;
        let is_package = match parent.rsplit_once('/') {
            // node_modules/@scope/name
            Some((grand, scope)) if scope.starts_with('@') => grand.ends_with("node_modules"),
            _ => parent.ends_with("node_modules") && !name.starts_with('@') && !name.starts_with('.'),
        };
        return is_package.then(|| Kind::PackageJson(dir.to_string()));
    }
    if let Some(node_modules) = path.strip_suffix("/.package-lock.json") {
        return node_modules
            .ends_with("node_modules")
            .then(|| Kind::NpmLock(node_modules.to_string()));
    }
    let dir = path.strip_suffix("/METADATA")?;
    dir.ends_with(".dist-info").then(|| Kind::Metadata(dir.to_string()))
}

fn npm_package(dir: &str, bytes: &[u8]) -> Option<Package> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v.get("version")?.as_str()?.to_string();
    let license = match v.get("license") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => o.get("type").and_then(|t| t.as_str()).map(str::to_string),
        // The old `licenses: [{type}]` form: any of them.
        _ => v.get("licenses").and_then(|l| l.as_array()).map(|list| {
            let types: Vec<&str> = list.iter().filter_map(|l| l.get("type")?.as_str()).collect();
            match types.len() {
                1 => types[0].to_string(),
                _ => format!("({})", types.join(" OR ")),
            }
        }),
    };
    Some(Package {
        ecosystem: Ecosystem::Npm,
        name,
        version,
        license: license.filter(|l| !l.trim().is_empty()),
        path: dir.to_string(),
        sha512: None,
        download: None,
    })
}

struct LockEntry {
    sha512: Option<String>,
    resolved: Option<String>,
}

/// npm's hidden lock file: `packages["node_modules/a/node_modules/b"]` has `integrity`
/// (`sha512-<base64>` of the tarball) and `resolved` (where it came from).
fn npm_lock(node_modules: &str, bytes: &[u8]) -> Vec<(String, LockEntry)> {
    use base64::Engine;
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let root = node_modules.strip_suffix("node_modules").unwrap_or(node_modules);
    let Some(packages) = v.get("packages").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    packages
        .iter()
        .filter(|(key, _)| key.starts_with("node_modules/"))
        .map(|(key, entry)| {
            let sha512 = entry
                .get("integrity")
                .and_then(|i| i.as_str())
                .and_then(|i| i.split_whitespace().find_map(|h| h.strip_prefix("sha512-")))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .filter(|d| d.len() == 64)
                .map(hex::encode);
            let resolved = entry.get("resolved").and_then(|r| r.as_str()).and_then(public_url);
            (format!("{root}{key}"), LockEntry { sha512, resolved })
        })
        .collect()
}

/// `url` when it is an http(s) URL that carries nothing that may be a credential (no user
/// information, no query): SBOMs are published.
fn public_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let plain = matches!(parsed.scheme(), "https" | "http")
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    plain.then(|| url.to_string())
}

/// A `METADATA` file (core metadata, RFC 822 headers): Name, Version and the licence:
/// `License-Expression` (metadata 2.4), else `License` when it is an SPDX expression, else the
/// licence classifiers, else a one-line `License` (many packages put the whole licence text
/// there: numpy's starts with its copyright line).
fn python_package(dir: &str, bytes: &[u8]) -> Option<Package> {
    let text = String::from_utf8_lossy(bytes);
    let (mut name, mut version, mut expression, mut license) = (None, None, None, None);
    let mut license_lines = 0;
    let mut classifiers = Vec::new();
    let mut in_license = false;
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (description) follows the headers
        }
        if line.starts_with([' ', '\t']) {
            license_lines += usize::from(in_license);
            continue;
        }
        in_license = false;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => name = Some(value.to_string()),
            "Version" => version = Some(value.to_string()),
            "License-Expression" => expression = Some(value.to_string()),
            "License" => {
                in_license = true;
                license_lines = 1;
                license = Some(value.to_string()).filter(|v| !v.is_empty() && v.len() <= 100);
            }
            "Classifier" => {
                if let Some(l) = value.strip_prefix("License :: ") {
                    classifiers.push(l.rsplit(" :: ").next().unwrap_or(l).to_string());
                }
            }
            _ => {}
        }
    }
    let license = license.filter(|_| license_lines == 1);
    let spdx_license = license.clone().filter(|l| super::spdx_expression(l).is_some());
    let from_classifiers = (!classifiers.is_empty()).then(|| match classifiers.len() {
        1 => classifiers[0].clone(),
        _ => classifiers.join(" OR "),
    });
    Some(Package {
        ecosystem: Ecosystem::Pypi,
        name: name?,
        version: version?,
        license: expression.or(spdx_license).or(from_classifiers).or(license),
        path: dir.to_string(),
        sha512: None,
        download: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer::{write_layer, Content, EntryKind, LayerEntry};

    fn file(path: &str, body: &str) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryKind::File {
                content: Content::Bytes(body.as_bytes().to_vec().into()),
                executable: false,
            },
        }
    }

    #[test]
    fn reads_npm_and_python_packages_from_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let lock = r#"{"packages":{"":{},"node_modules/a":{"version":"1.0.0","resolved":"https://registry.npmjs.org/a/-/a-1.0.0.tgz","integrity":"sha512-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="},
            "node_modules/@s/b":{"resolved":"https://u:p@example.com/b.tgz"}}}"#;
        let entries = vec![
            file("app/node_modules/.package-lock.json", lock),
            file("app/node_modules/a/package.json", r#"{"name":"a","version":"1.0.0","license":"MIT"}"#),
            file("app/node_modules/a/lib/package.json", r#"{"name":"not-a-package","version":"0"}"#),
            file(
                "app/node_modules/@s/b/package.json",
                r#"{"name":"@s/b","version":"2.0.0","licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#,
            ),
            file(
                "site/numpy-2.1.0.dist-info/METADATA",
                "Metadata-Version: 2.1\nName: numpy\nVersion: 2.1.0\nLicense: Copyright (c) 2005, NumPy Developers.\n        All rights reserved.\nClassifier: License :: OSI Approved :: BSD License\n\nLicense: not a header\n",
            ),
        ];
        let written = write_layer(entries, 1, &dir.path().join("layer.tar.gz")).unwrap();
        let packages = read_layer(&written.file).unwrap();
        let names: Vec<(&str, &str)> = packages.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, [("@s/b", "2.0.0"), ("a", "1.0.0"), ("numpy", "2.1.0")]);
        assert_eq!(packages[0].license.as_deref(), Some("(MIT OR Apache-2.0)"));
        assert_eq!(packages[0].download, None, "a URL with credentials is left out");
        assert_eq!(packages[1].sha512.as_deref(), Some("0".repeat(128).as_str()));
        assert_eq!(packages[1].path, "app/node_modules/a");
        assert_eq!(packages[2].license.as_deref(), Some("BSD License"));
        assert_eq!(packages[2].ecosystem, Ecosystem::Pypi);
    }

    #[test]
    fn the_cache_keeps_an_inventory_by_layer_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = InventoryCache::new(dir.path());
        let digest = Digest::of(b"layer");
        assert!(cache.get(&digest).is_none());
        let p = Package {
            ecosystem: Ecosystem::Npm,
            name: "a".into(),
            version: "1".into(),
            license: None,
            path: "x/node_modules/a".into(),
            sha512: None,
            download: None,
        };
        cache.put(&digest, std::slice::from_ref(&p));
        assert_eq!(cache.get(&digest), Some(vec![p]));
    }
}
