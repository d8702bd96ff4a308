//! Software bills of materials for the images fnbuild builds, from what the build put in: the
//! base image by digest, the runtime server, the runtime's libraries and the function's
//! dependencies (read from their layers, [`inventory`]), and the function. Written as SPDX 2.3
//! and CycloneDX 1.6 JSON; deterministic (the time is the build's SOURCE_DATE_EPOCH, every
//! list sorted), so the same build gives the same bytes.

pub mod cyclonedx;
pub mod inventory;
pub mod show;
pub mod spdx;

use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use serde::{Deserialize, Serialize};

/// The artifact types of the two documents, as referrers of their image (what ORAS, Trivy,
/// Ratify and Notation look for).
pub const SPDX_JSON: &str = "application/spdx+json";
pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Npm,
    Pypi,
}

/// An installed package, as its own metadata in the layer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The licence as the package declares it (an SPDX expression, or free text).
    pub license: Option<String>,
    /// Its directory in the image, without a leading `/`.
    pub path: String,
    /// SHA-512 (hex) of the package archive it was installed from, when the installer recorded it.
    pub sha512: Option<String>,
    /// Where it was downloaded from, when recorded (never with credentials or a query).
    pub download: Option<String>,
}

impl Package {
    /// The package URL (purl spec): `pkg:npm/%40scope/name@1.0.0`, `pkg:pypi/name@1.0`.
    pub fn purl(&self) -> String {
        match self.ecosystem {
            Ecosystem::Npm => format!(
                "pkg:npm/{}@{}",
                purl_encode(&self.name).replacen("%2F", "/", 1),
                purl_encode(&self.version)
            ),
            Ecosystem::Pypi => format!(
                "pkg:pypi/{}@{}",
                purl_encode(&pypi_name(&self.name)),
                purl_encode(&self.version)
            ),
        }
    }
}

/// PyPI names are case-insensitive with `_` and `.` the same as `-` (PEP 503); purls use the
/// normalised form.
fn pypi_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            '_' | '.' | '-' if out.ends_with('-') => {}
            '_' | '.' | '-' => out.push('-'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

fn purl_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Which part of the image a package came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The runtime's libraries (what Kyma's runtime images carry).
    Libraries,
    /// The function's own dependencies.
    Dependencies,
}

/// An image: a registry's (`registry/repository`) or a local one's name.
#[derive(Debug, Clone)]
pub struct ImageName {
    /// The last part of the repository, or the output's name.
    pub name: String,
    /// `registry/repository`, for images in a registry.
    pub repository: Option<String>,
}

impl ImageName {
    /// `pkg:oci/name@sha256%3A…?arch=…&repository_url=…` (the purl spec's oci type).
    pub fn purl(&self, digest: &Digest, platform: Option<&Platform>) -> String {
        let mut qualifiers = Vec::new();
        if let Some(p) = platform {
            qualifiers.push(format!("arch={}", purl_encode(&p.architecture)));
            qualifiers.push(format!("os={}", purl_encode(&p.os)));
        }
        if let Some(r) = &self.repository {
            qualifiers.push(format!(
                "repository_url={}",
                purl_encode(r).replace("%2F", "/").replace("%3A", ":")
            ));
        }
        let mut purl = format!(
            "pkg:oci/{}@{}",
            purl_encode(&self.name.to_lowercase()),
            purl_encode(digest.as_str())
        );
        if !qualifiers.is_empty() {
            purl.push('?');
            purl.push_str(&qualifiers.join("&"));
        }
        purl
    }
}

/// Everything an SBOM says of one platform's image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub image: ImageName,
    /// The image manifest's digest: what the SBOM describes.
    pub digest: Digest,
    pub platform: Platform,
    pub base: ImageName,
    pub base_digest: Digest,
    /// The Kyma runtime (`nodejs22`).
    pub runtime: String,
    /// The runtime server's layer, when fnbuild added its own server.
    pub runtime_layer: Option<Digest>,
    pub function_layer: Digest,
    pub packages: Vec<(Role, Package)>,
    /// RFC 3339, from SOURCE_DATE_EPOCH.
    pub created: String,
}

impl ImageFacts {
    /// The SBOM in both formats: (SPDX 2.3 JSON, CycloneDX 1.6 JSON).
    pub fn documents(&self) -> (Vec<u8>, Vec<u8>) {
        (spdx::document(self), cyclonedx::document(self))
    }
}

/// The tool that made a document, as both formats name it.
pub fn tool() -> (&'static str, &'static str) {
    ("fnbuild", env!("CARGO_PKG_VERSION"))
}

/// `raw` as a valid SPDX licence expression (canonical ids; `MIT/Apache-2.0` becomes
/// `MIT OR Apache-2.0`), or None when it is free text.
pub fn spdx_expression(raw: &str) -> Option<String> {
    let canonical = match ::spdx::Expression::canonicalize(raw) {
        Ok(Some(c)) => c,
        Ok(None) => raw.to_string(),
        Err(_) => return None,
    };
    ::spdx::Expression::parse(&canonical).ok().map(|_| canonical)
}

/// Stable JSON bytes: sorted keys (serde_json's map is a BTreeMap), two-space indent, a newline.
fn to_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("a JSON value serialises");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
        Package {
            ecosystem,
            name: name.into(),
            version: version.into(),
            license: None,
            path: String::new(),
            sha512: None,
            download: None,
        }
    }

    #[test]
    fn purls_follow_the_purl_spec() {
        assert_eq!(
            package(Ecosystem::Npm, "@img/sharp", "0.34.4").purl(),
            "pkg:npm/%40img/sharp@0.34.4"
        );
        assert_eq!(
            package(Ecosystem::Npm, "a", "1.0.0+build").purl(),
            "pkg:npm/a@1.0.0%2Bbuild"
        );
        assert_eq!(
            package(Ecosystem::Pypi, "Foo_Bar.baz", "2.1").purl(),
            "pkg:pypi/foo-bar-baz@2.1"
        );
        let name = ImageName {
            name: "hello".into(),
            repository: Some("127.0.0.1:5000/fn/hello".into()),
        };
        let d = Digest::of(b"x");
        assert_eq!(
            name.purl(&d, Some(&Platform::new("linux", "arm64", None))),
            format!(
                "pkg:oci/hello@sha256%3A{}?arch=arm64&os=linux&repository_url=127.0.0.1:5000/fn/hello",
                d.hex()
            )
        );
    }

    #[test]
    fn licence_expressions_are_canonical_or_free_text() {
        assert_eq!(spdx_expression("MIT").as_deref(), Some("MIT"));
        assert_eq!(
            spdx_expression("(MIT OR Apache-2.0)").as_deref(),
            Some("(MIT OR Apache-2.0)")
        );
        assert_eq!(spdx_expression("MIT/Apache-2.0").as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(spdx_expression("SEE LICENSE IN LICENSE.md"), None);
        assert_eq!(spdx_expression("BSD License"), None);
    }
}
