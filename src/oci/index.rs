//! Image indexes: one image per platform under one digest (an OCI image index, or a Docker
//! manifest list when every image is of the Docker family, as registries and older runtimes
//! expect of Docker images).

use super::digest::Digest;
use super::platform::Platform;
use super::{canonical_json, BuiltImage, Family, DOCKER_LIST, OCI_INDEX};
use serde_json::{json, Value};

/// A finished multi-platform image: the index serialised, and each platform's image.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    /// In the order the index lists them.
    pub images: Vec<(Platform, BuiltImage)>,
}

impl BuiltIndex {
    /// The index over `images` (one per platform, in this order).
    pub fn new(images: Vec<(Platform, BuiltImage)>) -> BuiltIndex {
        let docker = images
            .iter()
            .all(|(_, i)| Family::of_manifest(&i.manifest_media_type) == Some(Family::Docker));
        let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
        let manifests: Vec<Value> = images
            .iter()
            .map(|(platform, image)| {
                let mut p = json!({"os": platform.os, "architecture": platform.architecture});
                if let Some(v) = &platform.variant {
                    p["variant"] = json!(v);
                }
                json!({
                    "mediaType": image.manifest_media_type,
                    "digest": image.manifest_digest.as_str(),
                    "size": image.manifest.len(),
                    "platform": p,
                })
            })
            .collect();
        let bytes = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }));
        BuiltIndex {
            digest: Digest::of(&bytes),
            bytes,
            media_type: media_type.into(),
            images,
        }
    }
}

/// What a build made: one image, or an index of one image per platform.
#[derive(Debug, Clone)]
pub enum Built {
    Image(BuiltImage),
    Index(BuiltIndex),
}

impl Built {
    /// The digest that names it all (the manifest's, or the index's).
    pub fn digest(&self) -> &Digest {
        match self {
            Built::Image(i) => &i.manifest_digest,
            Built::Index(x) => &x.digest,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Built::Image(i) => &i.manifest_media_type,
            Built::Index(x) => &x.media_type,
        }
    }

    /// The top-level manifest's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Built::Image(i) => &i.manifest,
            Built::Index(x) => &x.bytes,
        }
    }

    /// Every image in it.
    pub fn images(&self) -> Vec<&BuiltImage> {
        match self {
            Built::Image(i) => vec![i],
            Built::Index(x) => x.images.iter().map(|(_, i)| i).collect(),
        }
    }

    /// The image a single-platform output (a docker-archive, a Docker engine) takes: `want`'s
    /// when the index has it, else the first.
    pub fn image_for(&self, want: &Platform) -> &BuiltImage {
        match self {
            Built::Image(i) => i,
            Built::Index(x) => x
                .images
                .iter()
                .find(|(p, _)| want.matches(&p.os, &p.architecture, p.variant.as_deref()))
                .map(|(_, i)| i)
                .unwrap_or(&x.images[0].1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(media_type: &str, tag: &[u8]) -> BuiltImage {
        BuiltImage {
            manifest: tag.to_vec(),
            manifest_digest: Digest::of(tag),
            manifest_media_type: media_type.into(),
            config: vec![],
            config_digest: Digest::of(b""),
            layers: vec![],
        }
    }

    #[test]
    fn an_index_lists_each_platform_and_is_a_docker_list_only_over_docker_images() {
        let arm = Platform::new("linux", "arm64", Some("v8"));
        let amd = Platform::new("linux", "amd64", None);
        let oci = BuiltIndex::new(vec![
            (amd.clone(), image(super::super::OCI_MANIFEST, b"a")),
            (arm.clone(), image(super::super::OCI_MANIFEST, b"b")),
        ]);
        let doc: Value = serde_json::from_slice(&oci.bytes).unwrap();
        assert_eq!(doc["mediaType"], OCI_INDEX);
        assert_eq!(
            doc["manifests"][0]["platform"],
            json!({"os":"linux","architecture":"amd64"})
        );
        assert_eq!(doc["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(doc["manifests"][1]["digest"], Digest::of(b"b").as_str());
        assert_eq!(oci.digest, Digest::of(&oci.bytes));
        let docker = BuiltIndex::new(vec![
            (amd.clone(), image(super::super::DOCKER_MANIFEST, b"a")),
            (arm.clone(), image(super::super::DOCKER_MANIFEST, b"b")),
        ]);
        assert_eq!(docker.media_type, DOCKER_LIST);
        let mixed = BuiltIndex::new(vec![
            (amd.clone(), image(super::super::DOCKER_MANIFEST, b"a")),
            (arm.clone(), image(super::super::OCI_MANIFEST, b"b")),
        ]);
        assert_eq!(mixed.media_type, OCI_INDEX);
        let built = Built::Index(oci);
        assert_eq!(built.image_for(&Platform::new("linux", "arm64", None)).manifest, b"b");
        assert_eq!(built.image_for(&Platform::new("linux", "s390x", None)).manifest, b"a");
    }
}
