//! CycloneDX 1.6 JSON (cyclonedx.org/docs/1.6/json): the image is the BOM's subject
//! (`metadata.component`); its base, the runtime server, the function and every installed
//! package are components, and the dependency graph says who needs what.

use super::{spdx_expression, to_bytes, Ecosystem, ImageFacts, Role};
use serde_json::json;
use sha2::Digest as _;

pub fn document(facts: &ImageFacts) -> Vec<u8> {
    let (tool, version) = super::tool();
    let image_ref = format!("image:{}", facts.digest);
    let mut components = vec![json!({
        "type": "container",
        "bom-ref": "base",
        "name": facts.base.name,
        "version": facts.base_digest.as_str(),
        "purl": facts.base.purl(&facts.base_digest, Some(&facts.platform)),
        "hashes": [{"alg": "SHA-256", "content": facts.base_digest.hex()}],
        "description": "The base image, by its manifest's digest",
    })];
    let mut image_needs = vec![json!("base")];
    let (mut runtime_needs, mut function_needs) = (Vec::new(), Vec::new());
    if let Some(layer) = &facts.runtime_layer {
        components.push(json!({
            "type": "application",
            "bom-ref": "runtime",
            "name": format!("fnbuild-runtime-{}", facts.runtime),
            "version": version,
            "hashes": [{"alg": "SHA-256", "content": layer.hex()}],
            "description": "The runtime server; the hash is its layer's",
        }));
        image_needs.push(json!("runtime"));
    }
    components.push(json!({
        "type": "application",
        "bom-ref": "function",
        "name": "function",
        "hashes": [{"alg": "SHA-256", "content": facts.function_layer.hex()}],
        "description": "The function's source; the hash is its layer's",
    }));
    image_needs.push(json!("function"));
    for (role, p) in &facts.packages {
        let bom_ref = format!("{}:{}", ecosystem(p.ecosystem), p.path);
        let (group, name) = match (p.ecosystem, p.name.split_once('/')) {
            (Ecosystem::Npm, Some((scope, name))) if scope.starts_with('@') => (Some(scope), name),
            _ => (None, p.name.as_str()),
        };
        let mut c = json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": name,
            "version": p.version,
            "purl": p.purl(),
            "properties": [{"name": "fnbuild:path", "value": format!("/{}", p.path)}],
        });
        if let Some(g) = group {
            c["group"] = json!(g);
        }
        if let Some(raw) = &p.license {
            c["licenses"] = match spdx_expression(raw) {
                Some(expression) => json!([{"expression": expression}]),
                None => json!([{"license": {"name": raw}}]),
            };
        }
        if let Some(h) = &p.sha512 {
            c["hashes"] = json!([{"alg": "SHA-512", "content": h}]);
        }
        if let Some(d) = &p.download {
            c["externalReferences"] = json!([{"type": "distribution", "url": d}]);
        }
        components.push(c);
        match (role, facts.runtime_layer.is_some()) {
            (Role::Libraries, true) => runtime_needs.push(json!(bom_ref)),
            (Role::Libraries, false) => {}
            (Role::Dependencies, _) => function_needs.push(json!(bom_ref)),
        }
        image_needs.push(json!(bom_ref));
    }
    let mut dependencies = vec![json!({"ref": image_ref, "dependsOn": image_needs})];
    if facts.runtime_layer.is_some() {
        dependencies.push(json!({"ref": "runtime", "dependsOn": runtime_needs}));
    }
    dependencies.push(json!({"ref": "function", "dependsOn": function_needs}));
    to_bytes(&json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(facts),
        "version": 1,
        "metadata": {
            "timestamp": facts.created,
            "tools": {"components": [{"type": "application", "name": tool, "version": version}]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": facts.image.name,
                "version": facts.digest.as_str(),
                "purl": facts.image.purl(&facts.digest, Some(&facts.platform)),
                "hashes": [{"alg": "SHA-256", "content": facts.digest.hex()}],
                "description": format!("The {} image for {}", facts.runtime, facts.platform),
            },
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

fn ecosystem(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Npm => "npm",
        Ecosystem::Pypi => "pypi",
    }
}

/// A version-5-shaped UUID from the image's digest: the same image, the same serial number
/// (a random one would make every build's BOM differ).
fn serial_number(facts: &ImageFacts) -> String {
    let h = sha2::Sha256::digest(format!("fnbuild cyclonedx {}", facts.digest).as_bytes());
    let mut b: [u8; 16] = h[..16].try_into().expect("16 of 32 bytes");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::spdx::tests::facts;
    use serde_json::Value;

    #[test]
    fn lists_every_package_with_its_purl_and_licence() {
        let doc: Value = serde_json::from_slice(&document(&facts())).unwrap();
        let components = doc["components"].as_array().unwrap();
        assert_eq!(components.len(), 6, "base, runtime, function and three packages");
        assert_eq!(components[3]["purl"], "pkg:npm/express@4.21.2");
        assert_eq!(components[3]["licenses"][0]["expression"], "MIT");
        assert_eq!(components[4]["licenses"][0]["license"]["name"], "SEE LICENSE IN x");
        assert_ne!(
            components[4]["bom-ref"], components[5]["bom-ref"],
            "a package installed twice is two components"
        );
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        assert_eq!(&serial[23..24], "5");
        assert_eq!(
            doc["dependencies"][1]["dependsOn"][0],
            "npm:usr/src/app/function/node_modules/express"
        );
        assert_eq!(document(&facts()), document(&facts()));
    }
}
