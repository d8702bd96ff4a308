//! Artifacts that refer to an image (OCI image-spec 1.1): each an image manifest with an
//! `artifactType`, the empty config, its document as the one layer, and the image as its
//! `subject`. A registry with the referrers API lists them by subject; for one without it
//! (distribution 2.8, GHCR, Docker Hub) the distribution spec's tag-schema fallback keeps an
//! index of them under the tag `sha256-<subject hex>`, which every writer reads, extends and
//! writes back.

use super::digest::Digest;
use super::{canonical_json, rfc3339, OCI_INDEX, OCI_MANIFEST};
use serde_json::{json, Value};

/// The empty descriptor's media type and blob (`{}`), the config of artifacts that need none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_BLOB: &[u8] = b"{}";

/// The image an artifact refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// One artifact, ready to write: its manifest and the blobs it names.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub artifact_type: String,
    pub subject: Subject,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// The document (the one layer) and its digest.
    pub document: Vec<u8>,
    pub document_digest: Digest,
}

impl Artifact {
    /// The artifact whose one layer is `document`, of `artifact_type`, referring to `subject`.
    pub fn new(artifact_type: &str, document: Vec<u8>, subject: &Subject, epoch: u64) -> Artifact {
        Artifact::annotated(artifact_type, document, subject, epoch, &[])
    }

    /// [`Artifact::new`] with more manifest annotations (an attestation's predicate type).
    pub fn annotated(
        artifact_type: &str,
        document: Vec<u8>,
        subject: &Subject,
        epoch: u64,
        annotations: &[(&str, &str)],
    ) -> Artifact {
        let document_digest = Digest::of(&document);
        let mut all = serde_json::Map::new();
        all.insert("org.opencontainers.image.created".into(), json!(rfc3339(epoch)));
        for (k, v) in annotations {
            all.insert((*k).into(), json!(v));
        }
        let manifest = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty_descriptor(),
            "layers": [{
                "mediaType": artifact_type,
                "digest": document_digest.as_str(),
                "size": document.len(),
            }],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest.as_str(),
                "size": subject.size,
            },
            "annotations": all,
        }));
        Artifact {
            artifact_type: artifact_type.into(),
            subject: subject.clone(),
            digest: Digest::of(&manifest),
            manifest,
            document,
            document_digest,
        }
    }

    /// Its descriptor in a referrers list: with its artifact type and annotations.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest.as_str(),
            "size": self.manifest.len(),
            "artifactType": self.artifact_type,
            "annotations": annotations(&self.manifest),
        })
    }
}

pub fn empty_descriptor() -> Value {
    json!({"mediaType": EMPTY_MEDIA_TYPE, "digest": Digest::of(EMPTY_BLOB).as_str(), "size": EMPTY_BLOB.len()})
}

fn annotations(manifest: &[u8]) -> Value {
    serde_json::from_slice::<Value>(manifest)
        .ok()
        .and_then(|m| m.get("annotations").cloned())
        .unwrap_or_else(|| json!({}))
}

/// The fallback tag for `subject`'s referrers: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

#[derive(Debug, thiserror::Error)]
#[error("the referrers index is not an OCI image index: {0}")]
pub struct BadIndex(String);

/// `existing` (the fallback index as read, if there was one) with `added` in it: entries of
/// others are kept as they are, in their order; an artifact already listed is not listed twice.
pub fn merge_index(existing: Option<&[u8]>, added: &[Value]) -> Result<Vec<u8>, BadIndex> {
    let mut manifests: Vec<Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let v: Value = serde_json::from_slice(bytes).map_err(|e| BadIndex(e.to_string()))?;
            if !v.is_object() {
                return Err(BadIndex("not a JSON object".into()));
            }
            if let Some(other) = v.get("mediaType").and_then(Value::as_str).filter(|m| *m != OCI_INDEX) {
                return Err(BadIndex(format!("it is a {other}")));
            }
            match v.get("manifests") {
                Some(Value::Array(list)) => list.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(BadIndex("`manifests` is not a list".into())),
            }
        }
    };
    for d in added {
        if !manifests.iter().any(|m| m.get("digest") == d.get("digest")) {
            manifests.push(d.clone());
        }
    }
    Ok(canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })))
}

/// The referrers an index lists (the API's answer or a fallback index): each one's digest
/// and artifact type.
pub fn listed(index: &[u8]) -> Result<Vec<(Digest, String)>, BadIndex> {
    let v: Value = serde_json::from_slice(index).map_err(|e| BadIndex(e.to_string()))?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in list {
        let digest = m
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| BadIndex("an entry has no digest".into()))?
            .parse()
            .map_err(|e: super::digest::DigestError| BadIndex(e.0))?;
        let kind = m
            .get("artifactType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        out.push((digest, kind));
    }
    Ok(out)
}

/// The document (the one layer: digest and size) of the artifact manifest `manifest`, which
/// must refer to `subject`: an artifact listed for an image it does not refer to means the
/// referrers list was altered.
pub fn document_of(manifest: &[u8], subject: &Digest) -> Result<(Digest, u64), String> {
    let v: Value = serde_json::from_slice(manifest).map_err(|e| format!("the artifact's manifest is not JSON: {e}"))?;
    if v["subject"]["digest"].as_str() != Some(subject.as_str()) {
        return Err(format!(
            "it refers to another image than {subject}: the referrers list was altered"
        ));
    }
    let layer = &v["layers"][0];
    let digest = layer["digest"]
        .as_str()
        .ok_or("the artifact's manifest names no document")?
        .parse()
        .map_err(|e: super::digest::DigestError| e.0)?;
    Ok((digest, layer["size"].as_u64().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(b"image"),
            size: 5,
        }
    }

    #[test]
    fn an_artifact_names_its_subject_type_and_document() {
        let a = Artifact::new("application/spdx+json", b"{\"spdx\":1}".to_vec(), &subject(), 1);
        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["subject"]["digest"], subject().digest.as_str());
        assert_eq!(
            m["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m["layers"][0]["digest"], a.document_digest.as_str());
        assert_eq!(
            a.descriptor()["annotations"]["org.opencontainers.image.created"],
            "1970-01-01T00:00:01Z"
        );
        assert_eq!(
            fallback_tag(&subject().digest),
            format!("sha256-{}", subject().digest.hex())
        );
    }

    #[test]
    fn merging_keeps_others_entries_and_lists_each_once() {
        let theirs = json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(b"theirs").as_str(), "size": 1, "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"});
        let existing = canonical_json(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [theirs]}));
        let a = Artifact::new("application/spdx+json", b"{}".to_vec(), &subject(), 1);
        let merged = merge_index(Some(&existing), &[a.descriptor()]).unwrap();
        let again = merge_index(Some(&merged), &[a.descriptor()]).unwrap();
        assert_eq!(merged, again);
        let list = listed(&merged).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].0, Digest::of(b"theirs"));
        assert_eq!(list[1], (a.digest.clone(), "application/spdx+json".into()));
        assert!(merge_index(Some(b"{}"), &[]).is_ok_and(|i| listed(&i).unwrap().is_empty()));
        assert!(
            merge_index(Some(b"[1]"), &[]).is_err(),
            "what is not an index is not overwritten"
        );
        let image = format!(r#"{{"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert!(merge_index(Some(image.as_bytes()), &[]).is_err());
        assert!(merge_index(Some(b"{\"manifests\": 3}"), &[]).is_err());
    }
}
