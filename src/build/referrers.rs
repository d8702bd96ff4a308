//! What is attached to each platform's image as referrers. `--sbom`: an SPDX and a CycloneDX
//! document, whose packages are read from the layers the image carries (the runtime's
//! libraries, the function's dependencies), once per layer digest, so a cached layer's
//! inventory is cached too. `--provenance`: SLSA v1 provenance in a DSSE envelope.

use super::BuildOptions;
use crate::attest::provenance::{self, ProvenanceFacts, Resolved};
use crate::attest::{self, DSSE_ENVELOPE, IN_TOTO_PAYLOAD, PREDICATE_ANNOTATION};
use crate::formats::Location;
use crate::function::dependencies::ProvidedLayer;
use crate::oci::digest::Digest;
use crate::oci::index::Built;
use crate::oci::layer::WrittenLayer;
use crate::oci::platform::Platform;
use crate::oci::referrers::{Artifact, Subject};
use crate::oci::{rfc3339, BaseImage, BlobLocation};
use crate::registry::Client;
use crate::sbom::inventory::{self, InventoryCache};
use crate::sbom::{ImageFacts, ImageName, Package, Role, CYCLONEDX_JSON, SPDX_JSON};
use anyhow::{Context, Result};
use std::path::Path;

/// What the SBOMs are made from, besides the built images.
pub(super) struct Inputs<'a> {
    pub opts: &'a BuildOptions,
    pub runtime: &'a str,
    pub base_location: &'a Location,
    pub bases: &'a [BaseImage],
    pub libraries: Option<&'a WrittenLayer>,
    pub runtime_layer: Option<&'a WrittenLayer>,
    pub function_layer: &'a WrittenLayer,
    pub dependencies: &'a [Option<ProvidedLayer>],
    pub epoch: u64,
    pub client: Option<&'a Client>,
    pub work: &'a Path,
    /// When the build began (wall clock), for the provenance.
    pub started: std::time::SystemTime,
    /// The dependency and lock files the install read, by name (for the provenance).
    pub dependency_files: Vec<String>,
}

/// The artifacts of every image in `built`, the index's order: its SBOMs (two) and provenance.
pub(super) async fn artifacts(built: &Built, inputs: &Inputs<'_>) -> Result<Vec<Artifact>> {
    let opts = inputs.opts;
    let cache = inputs.opts.dependencies.cache_dir.as_deref().map(InventoryCache::new);
    let libraries = match inputs.libraries.filter(|_| opts.sbom) {
        Some(l) => {
            packages_of(
                &l.digest,
                l.size,
                &BlobLocation::File(l.file.clone()),
                cache.as_ref(),
                inputs,
            )
            .await?
        }
        None => Vec::new(),
    };
    let images: Vec<(Platform, &crate::oci::BuiltImage)> = match built {
        Built::Image(image) => vec![(Platform::of_config(&inputs.bases[0].config), image)],
        Built::Index(index) => index.images.iter().map(|(p, i)| (p.clone(), i)).collect(),
    };
    let mut artifacts = Vec::new();
    for (((platform, image), base), deps) in images.into_iter().zip(inputs.bases).zip(inputs.dependencies) {
        let subject = Subject {
            media_type: image.manifest_media_type.clone(),
            digest: image.manifest_digest.clone(),
            size: image.manifest.len() as u64,
        };
        let name = image_name(&opts.outputs);
        if opts.provenance {
            let statement = attest::statement(
                &name.repository.clone().unwrap_or_else(|| name.name.clone()),
                image.manifest_digest.hex(),
                provenance::PREDICATE_TYPE,
                provenance::predicate(&provenance_facts(inputs, &platform, base, deps.as_ref())),
            );
            artifacts.push(attestation(
                opts,
                &statement,
                provenance::PREDICATE_TYPE,
                &subject,
                inputs.epoch,
            ));
        }
        if !opts.sbom {
            continue;
        }
        let mut packages: Vec<(Role, Package)> = libraries.iter().map(|p| (Role::Libraries, p.clone())).collect();
        if let Some(d) = deps {
            let found = packages_of(&d.digest, d.size, &d.location, cache.as_ref(), inputs).await?;
            packages.extend(found.into_iter().map(|p| (Role::Dependencies, p)));
        }
        let facts = ImageFacts {
            image: name,
            digest: image.manifest_digest.clone(),
            platform,
            base: base_name(inputs.base_location, base),
            base_digest: base.manifest_digest.clone(),
            runtime: inputs.runtime.to_string(),
            runtime_layer: inputs.runtime_layer.map(|l| l.digest.clone()),
            function_layer: inputs.function_layer.digest.clone(),
            packages,
            created: rfc3339(inputs.epoch),
        };
        let (spdx, cyclonedx) = facts.documents();
        // Signed, the SBOMs are attestations too (what admission policies check).
        if opts.signing_key.is_some() {
            let subject_name = facts
                .image
                .repository
                .clone()
                .unwrap_or_else(|| facts.image.name.clone());
            for (document, predicate_type) in [(&spdx, SPDX_PREDICATE), (&cyclonedx, CYCLONEDX_PREDICATE)] {
                let predicate: serde_json::Value = serde_json::from_slice(document).context("an SBOM is JSON")?;
                let statement =
                    attest::statement(&subject_name, image.manifest_digest.hex(), predicate_type, predicate);
                artifacts.push(attestation(opts, &statement, predicate_type, &subject, inputs.epoch));
            }
        }
        artifacts.push(Artifact::new(SPDX_JSON, spdx, &subject, inputs.epoch));
        artifacts.push(Artifact::new(CYCLONEDX_JSON, cyclonedx, &subject, inputs.epoch));
    }
    Ok(artifacts)
}

/// The predicate types of SBOM attestations (as cosign's `--type spdxjson` / `cyclonedx` name them).
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";

/// `statement` in a DSSE envelope, signed with the build's key when it has one.
fn attestation(
    opts: &BuildOptions,
    statement: &serde_json::Value,
    predicate_type: &str,
    subject: &Subject,
    epoch: u64,
) -> Artifact {
    let payload = crate::oci::canonical_json(statement);
    let signatures: Vec<(String, Vec<u8>)> = opts
        .signing_key
        .iter()
        .map(|k| (String::new(), k.sign(&attest::pae(IN_TOTO_PAYLOAD, &payload))))
        .collect();
    let envelope = attest::envelope(IN_TOTO_PAYLOAD, &payload, &signatures);
    Artifact::annotated(
        DSSE_ENVELOPE,
        envelope,
        subject,
        epoch,
        &[(PREDICATE_ANNOTATION, predicate_type)],
    )
}

/// What the provenance of one platform's image says.
fn provenance_facts(
    inputs: &Inputs<'_>,
    platform: &Platform,
    base: &BaseImage,
    deps: Option<&ProvidedLayer>,
) -> ProvenanceFacts {
    let opts = inputs.opts;
    let sha256 = |d: &Digest| ("sha256", d.hex().to_string());
    let mut resolved = vec![Resolved {
        name: "base".into(),
        uri: Some(inputs.base_location.to_string()),
        digest: sha256(&base.manifest_digest),
    }];
    if let (Some(url), Some(rev)) = (&opts.source_url, &opts.revision) {
        resolved.push(Resolved {
            name: "source".into(),
            uri: Some(format!("git+{url}")),
            digest: ("gitCommit", rev.clone()),
        });
    }
    for file in &inputs.dependency_files {
        if let Ok(bytes) = std::fs::read(opts.source_dir.join(file)) {
            resolved.push(Resolved {
                name: file.clone(),
                uri: None,
                digest: sha256(&Digest::of(&bytes)),
            });
        }
    }
    let layers = [
        ("runtime layer", inputs.runtime_layer.map(|l| &l.digest)),
        ("libraries layer", inputs.libraries.map(|l| &l.digest)),
        ("dependencies layer", deps.map(|d| &d.digest)),
        ("function layer", Some(&inputs.function_layer.digest)),
    ];
    for (name, digest) in layers {
        if let Some(d) = digest {
            resolved.push(Resolved {
                name: name.into(),
                uri: None,
                digest: sha256(d),
            });
        }
    }
    ProvenanceFacts {
        source_uri: match (&opts.source_url, &opts.revision) {
            (Some(url), Some(rev)) => Some(format!("git+{url}@{rev}")),
            (Some(url), None) => Some(url.clone()),
            _ => None,
        },
        runtime: inputs.runtime.to_string(),
        base: inputs.base_location.to_string(),
        platform: platform.to_string(),
        source_date_epoch: inputs.epoch,
        resolved,
        started: humantime::format_rfc3339_seconds(inputs.started).to_string(),
        finished: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// The packages in a layer: from the inventory cache, else read from the layer (downloaded
/// first when only a registry has it).
async fn packages_of(
    digest: &Digest,
    size: u64,
    location: &BlobLocation,
    cache: Option<&InventoryCache>,
    inputs: &Inputs<'_>,
) -> Result<Vec<Package>> {
    if let Some(found) = cache.and_then(|c| c.get(digest)) {
        return Ok(found);
    }
    let file = match location {
        BlobLocation::File(f) => f.clone(),
        BlobLocation::Registry(r) => {
            let client = inputs
                .client
                .context("the layer is in a registry but no registry client was set up")?;
            // Platforms of an index may share one layer: downloaded once.
            let dest = inputs.work.join(format!("sbom-{}", digest.hex()));
            if !dest.exists() {
                client
                    .download_blob(r, digest.as_str(), size, &dest)
                    .await
                    .with_context(|| format!("downloading the layer {digest} to list its packages"))?;
            }
            dest
        }
    };
    let packages = tokio::task::spawn_blocking(move || inventory::read_layer(&file))
        .await
        .context("the package reader stopped")?
        .with_context(|| format!("cannot list the packages of the layer {digest}"))?;
    if let Some(c) = cache {
        c.put(digest, &packages);
    }
    Ok(packages)
}

/// The image's name in its SBOM: the first registry output's repository, else the first
/// output's name, else `function`.
fn image_name(outputs: &[Location]) -> ImageName {
    let registry = outputs.iter().find_map(|o| match o {
        Location::Registry(r) => Some(r),
        _ => None,
    });
    if let Some(r) = registry {
        return ImageName {
            name: r.repository.rsplit('/').next().unwrap_or(&r.repository).to_string(),
            repository: Some(r.name()),
        };
    }
    let local = outputs.iter().find_map(|o| match o {
        Location::OciLayout { tag: Some(t), .. } => Some(t.clone()),
        Location::DockerArchive { name: Some(n), .. } | Location::DockerDaemon { name: n } => {
            let last = n.rsplit('/').next().unwrap_or(n);
            Some(last.split(':').next().unwrap_or(last).to_string())
        }
        _ => None,
    });
    ImageName {
        name: local.unwrap_or_else(|| "function".into()),
        repository: None,
    }
}

fn base_name(location: &Location, base: &BaseImage) -> ImageName {
    match location {
        Location::Registry(r) => ImageName {
            name: r.repository.rsplit('/').next().unwrap_or(&r.repository).to_string(),
            repository: Some(r.name()),
        },
        _ => ImageName {
            name: base.name.clone(),
            repository: None,
        },
    }
}
