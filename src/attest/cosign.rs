//! cosign's signature format (the one `cosign verify --key` reads by default): a Simple Signing
//! payload naming the repository and the manifest digest, signed (ECDSA, DER, base64 in the
//! layer annotation `dev.cosignproject.cosign/signature`), kept as a layer of a small image
//! tagged `sha256-<hex>.sig` in the image's repository. Other signatures already there (other
//! keys, other signers) stay: ours is added as one more layer.

use crate::oci::digest::Digest;
use crate::oci::{canonical_json, OCI_CONFIG, OCI_MANIFEST};
use base64::Engine;
use serde_json::{json, Value};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The tag of `subject`'s signature image.
pub fn signature_tag(subject: &Digest) -> String {
    format!("{}.sig", subject.as_str().replacen(':', "-", 1))
}

/// The Simple Signing payload cosign signs: this digest, in this repository (`registry/repo`).
pub fn payload(docker_reference: &str, subject: &Digest) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": subject.as_str()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("JSON serialises")
}

/// One signature: the payload and its signature (DER).
#[derive(Debug, Clone)]
pub struct Signature {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Signature {
    pub fn layer(&self) -> Value {
        json!({
            "mediaType": SIMPLE_SIGNING,
            "digest": Digest::of(&self.payload).as_str(),
            "size": self.payload.len(),
            "annotations": {SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(&self.signature)},
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the signature image is not an image manifest: {0}")]
pub struct BadSignatureImage(String);

/// The signature image with `added` among its layers, after those of `existing` (as read
/// from the tag, if there was one): its manifest and config.
pub fn signature_image(existing: Option<&[u8]>, added: &Signature) -> Result<(Vec<u8>, Vec<u8>), BadSignatureImage> {
    let mut layers: Vec<Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let v: Value = serde_json::from_slice(bytes).map_err(|e| BadSignatureImage(e.to_string()))?;
            match v.get("layers") {
                Some(Value::Array(l)) => l.clone(),
                _ => return Err(BadSignatureImage("it has no layers".into())),
            }
        }
    };
    let ours = added.layer();
    if !layers.contains(&ours) {
        layers.push(ours);
    }
    // The layers are the payloads themselves (uncompressed): each diff ID is its digest.
    let diff_ids: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    let config = canonical_json(&json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }));
    let manifest = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(&config).as_str(), "size": config.len()},
        "layers": layers,
    }));
    Ok((manifest, config))
}

/// The signatures a signature image's manifest holds: payload digest and size, signature (DER).
pub fn signatures_in(manifest: &[u8]) -> Vec<(Digest, u64, Vec<u8>)> {
    let Ok(v) = serde_json::from_slice::<Value>(manifest) else {
        return Vec::new();
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"] == SIMPLE_SIGNING)
        .filter_map(|l| {
            let digest = l["digest"].as_str()?.parse().ok()?;
            let sig = b64.decode(l["annotations"][SIGNATURE_ANNOTATION].as_str()?).ok()?;
            Some((digest, l["size"].as_u64()?, sig))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_added_to_those_already_there() {
        let subject = Digest::of(b"image");
        assert_eq!(signature_tag(&subject), format!("sha256-{}.sig", subject.hex()));
        let p: Value = serde_json::from_slice(&payload("r/fn/hello", &subject)).unwrap();
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], subject.as_str());
        let theirs = Signature {
            payload: b"theirs".to_vec(),
            signature: vec![1, 2],
        };
        let ours = Signature {
            payload: payload("r/fn/hello", &subject),
            signature: vec![3, 4],
        };
        let (first, _) = signature_image(None, &theirs).unwrap();
        let (both, config) = signature_image(Some(&first), &ours).unwrap();
        let (again, _) = signature_image(Some(&both), &ours).unwrap();
        assert_eq!(both, again, "the same signature is not added twice");
        let found = signatures_in(&both);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].2, vec![3, 4]);
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][1], Digest::of(&ours.payload).as_str());
        assert!(signature_image(Some(b"{}"), &ours).is_err());
    }
}
