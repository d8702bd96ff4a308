//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3): the image is the document's described
//! package; it descends from its base and contains the runtime server, the function and every
//! installed package (the server depends on the runtime's libraries, the function on its own).

use super::{spdx_expression, to_bytes, ImageFacts, ImageName, Package, Role};
use crate::oci::digest::Digest;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn document(facts: &ImageFacts) -> Vec<u8> {
    let (tool, version) = super::tool();
    let mut packages = Vec::new();
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")];
    let image_comment = format!("The {} image for {}", facts.runtime, facts.platform);
    packages.push(container(
        "SPDXRef-Image",
        &facts.image,
        &facts.digest,
        facts,
        &image_comment,
    ));
    let base_comment = "The base image, by its manifest's digest";
    packages.push(container(
        "SPDXRef-Base",
        &facts.base,
        &facts.base_digest,
        facts,
        base_comment,
    ));
    relationships.push(relationship("SPDXRef-Image", "DESCENDANT_OF", "SPDXRef-Base"));
    if let Some(layer) = &facts.runtime_layer {
        packages.push(json!({
            "SPDXID": "SPDXRef-Runtime",
            "name": format!("fnbuild-runtime-{}", facts.runtime),
            "versionInfo": version,
            "supplier": format!("Organization: {tool}"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "checksums": [sha256(layer.hex())],
            "comment": "The runtime server; the checksum is its layer's",
        }));
        relationships.push(relationship("SPDXRef-Image", "CONTAINS", "SPDXRef-Runtime"));
    }
    packages.push(json!({
        "SPDXID": "SPDXRef-Function",
        "name": "function",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "SOURCE",
        "checksums": [sha256(facts.function_layer.hex())],
        "comment": "The function's source; the checksum is its layer's",
    }));
    relationships.push(relationship("SPDXRef-Image", "CONTAINS", "SPDXRef-Function"));

    let mut ids = BTreeSet::new();
    let mut extracted = BTreeMap::new();
    for (role, p) in &facts.packages {
        let id = unique_id(&mut ids, p);
        packages.push(package(&id, p, &mut extracted));
        relationships.push(relationship("SPDXRef-Image", "CONTAINS", &id));
        let user = match (role, facts.runtime_layer.is_some()) {
            (Role::Libraries, true) => "SPDXRef-Runtime",
            (Role::Libraries, false) => continue,
            (Role::Dependencies, _) => "SPDXRef-Function",
        };
        relationships.push(relationship(user, "DEPENDS_ON", &id));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", facts.image.name, facts.digest),
        "documentNamespace": format!("https://fnbuild.dev/spdx/{}/{}", facts.image.name, facts.digest.hex()),
        "creationInfo": {
            "created": facts.created,
            "creators": [format!("Tool: {tool}-{version}")],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted
            .into_iter()
            .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
            .collect();
    }
    to_bytes(&doc)
}

/// An image as an SPDX package: by its manifest's digest, with its oci purl.
fn container(id: &str, name: &ImageName, digest: &Digest, facts: &ImageFacts, comment: &str) -> Value {
    json!({
        "SPDXID": id,
        "name": name.name,
        "versionInfo": digest.as_str(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [sha256(digest.hex())],
        "externalRefs": [purl(&name.purl(digest, Some(&facts.platform)))],
        "comment": comment,
    })
}

fn package(id: &str, p: &Package, extracted: &mut BTreeMap<String, String>) -> Value {
    let declared = match &p.license {
        None => "NOASSERTION".to_string(),
        Some(raw) => spdx_expression(raw).unwrap_or_else(|| {
            // Free text: kept as the document's own licence, named after it.
            let id = format!("LicenseRef-{}", sanitise(raw));
            extracted.insert(id.clone(), raw.clone());
            id
        }),
    };
    let mut v = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": p.download.as_deref().unwrap_or("NOASSERTION"),
        "filesAnalyzed": false,
        "primaryPackagePurpose": "LIBRARY",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared,
        "copyrightText": "NOASSERTION",
        "externalRefs": [purl(&p.purl())],
        "comment": format!("Installed at /{}", p.path),
    });
    if let Some(h) = &p.sha512 {
        v["checksums"] = json!([{"algorithm": "SHA512", "checksumValue": h}]);
    }
    v
}

/// `SPDXRef-npm-name-version`, made unique with a counter (a package may be installed twice,
/// in nested `node_modules`).
fn unique_id(ids: &mut BTreeSet<String>, p: &Package) -> String {
    let eco = match p.ecosystem {
        super::Ecosystem::Npm => "npm",
        super::Ecosystem::Pypi => "pypi",
    };
    let base = format!("SPDXRef-{eco}-{}-{}", sanitise(&p.name), sanitise(&p.version));
    let mut id = base.clone();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// SPDX ids take letters, digits, `.` and `-`.
fn sanitise(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '-',
        })
        .collect();
    out.trim_matches('-').chars().take(64).collect::<String>()
}

fn sha256(hex: &str) -> Value {
    json!({"algorithm": "SHA256", "checksumValue": hex})
}

fn purl(locator: &str) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator})
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oci::platform::Platform;
    use crate::sbom::Ecosystem;

    pub fn facts() -> ImageFacts {
        let package = |name: &str, version: &str, license: Option<&str>| Package {
            ecosystem: Ecosystem::Npm,
            name: name.into(),
            version: version.into(),
            license: license.map(str::to_string),
            path: format!("usr/src/app/function/node_modules/{name}"),
            sha512: Some("ab".repeat(64)),
            download: None,
        };
        ImageFacts {
            image: ImageName {
                name: "hello".into(),
                repository: Some("127.0.0.1:5000/fn/hello".into()),
            },
            digest: Digest::of(b"image"),
            platform: Platform::new("linux", "amd64", None),
            base: ImageName {
                name: "node".into(),
                repository: Some("127.0.0.1:5000/node".into()),
            },
            base_digest: Digest::of(b"base"),
            runtime: "nodejs22".into(),
            runtime_layer: Some(Digest::of(b"runtime")),
            function_layer: Digest::of(b"function"),
            packages: vec![
                (Role::Libraries, package("express", "4.21.2", Some("MIT"))),
                (Role::Dependencies, package("a", "1.0.0", Some("SEE LICENSE IN x"))),
                (Role::Dependencies, {
                    let mut nested = package("a", "1.0.0", None);
                    nested.path = "usr/src/app/function/node_modules/b/node_modules/a".into();
                    nested
                }),
            ],
            created: "1970-01-01T00:00:01Z".into(),
        }
    }

    #[test]
    fn describes_the_image_and_each_package_once() {
        let doc: Value = serde_json::from_slice(&document(&facts())).unwrap();
        let ids: Vec<&str> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "SPDXRef-Image",
                "SPDXRef-Base",
                "SPDXRef-Runtime",
                "SPDXRef-Function",
                "SPDXRef-npm-express-4.21.2",
                "SPDXRef-npm-a-1.0.0",
                "SPDXRef-npm-a-1.0.0-2"
            ]
        );
        assert_eq!(doc["packages"][5]["licenseDeclared"], "LicenseRef-SEE-LICENSE-IN-x");
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["extractedText"],
            "SEE LICENSE IN x"
        );
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:01Z");
        assert_eq!(
            document(&facts()),
            document(&facts()),
            "the same facts give the same bytes"
        );
    }
}
