//! `--sbom`: each platform's image gets an SPDX and a CycloneDX document as referrers. The
//! packages are read from the layers the image carries (the runtime's libraries, the
//! function's dependencies), once per layer digest: a cached layer's inventory is cached too.

use super::BuildOptions;
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
}

/// The SBOM artifacts of every image in `built` (two per platform, the index's order).
pub(super) async fn artifacts(built: &Built, inputs: &Inputs<'_>) -> Result<Vec<Artifact>> {
    let cache = inputs.opts.dependencies.cache_dir.as_deref().map(InventoryCache::new);
    let libraries = match inputs.libraries {
        Some(l) => packages_of(&l.digest, &BlobLocation::File(l.file.clone()), cache.as_ref(), inputs).await?,
        None => Vec::new(),
    };
    let images: Vec<(Platform, &crate::oci::BuiltImage)> = match built {
        Built::Image(image) => vec![(Platform::of_config(&inputs.bases[0].config), image)],
        Built::Index(index) => index.images.iter().map(|(p, i)| (p.clone(), i)).collect(),
    };
    let mut artifacts = Vec::new();
    for (((platform, image), base), deps) in images.into_iter().zip(inputs.bases).zip(inputs.dependencies) {
        let mut packages: Vec<(Role, Package)> = libraries.iter().map(|p| (Role::Libraries, p.clone())).collect();
        if let Some(d) = deps {
            let found = packages_of(&d.digest, &d.location, cache.as_ref(), inputs).await?;
            packages.extend(found.into_iter().map(|p| (Role::Dependencies, p)));
        }
        let facts = ImageFacts {
            image: image_name(&inputs.opts.outputs),
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
        let subject = Subject {
            media_type: image.manifest_media_type.clone(),
            digest: image.manifest_digest.clone(),
            size: image.manifest.len() as u64,
        };
        let (spdx, cyclonedx) = facts.documents();
        artifacts.push(Artifact::new(SPDX_JSON, spdx, &subject, inputs.epoch));
        artifacts.push(Artifact::new(CYCLONEDX_JSON, cyclonedx, &subject, inputs.epoch));
    }
    Ok(artifacts)
}

/// The packages in a layer: from the inventory cache, else read from the layer (downloaded
/// first when only a registry has it).
async fn packages_of(
    digest: &Digest,
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
            let dest = inputs.work.join(format!("sbom-{}", digest.hex()));
            let size = std::fs::metadata(&dest).map(|m| m.len()).ok();
            if size.is_none() {
                let size = inputs
                    .dependencies
                    .iter()
                    .flatten()
                    .find(|d| &d.digest == digest)
                    .map_or(0, |d| d.size);
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
