//! What `fnbuild build --json` reports: the image (or each platform's image), its layers and
//! where it went.

use crate::formats::OutputSummary;
use crate::function::dependencies::DependencySummary;
use crate::function::dependencies::ProvidedLayer;
use crate::oci::index::Built;
use crate::oci::platform::Platform;
use crate::oci::{BaseImage, BuiltImage};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct BuildResult {
    /// Digest of the image manifest (of the index, for several platforms).
    pub digest: String,
    pub media_type: String,
    pub runtime: String,
    /// A single-platform build's image: its `config_digest`, `base`, `layers`, `dependencies`
    /// at the top level, as before there were indexes.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub single: Option<ImageResult>,
    /// A multi-platform build's images, in the index's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformResult>,
    pub outputs: Vec<OutputSummary>,
    pub timings_ms: Timings,
}

/// One platform's image in an index.
#[derive(Debug, Serialize)]
pub struct PlatformResult {
    /// `os/architecture[/variant]`, from the base's config.
    pub platform: String,
    /// Digest of the image manifest.
    pub digest: String,
    #[serde(flatten)]
    pub image: ImageResult,
}

/// What an image is made of.
#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub config_digest: String,
    pub base: BaseSummary,
    pub layers: Vec<LayerSummary>,
    /// The dependency layer: where it came from (`cache`), its `key`, `install_ms`.
    pub dependencies: DependencySummary,
}

#[derive(Debug, Serialize)]
pub struct BaseSummary {
    pub name: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
pub struct LayerSummary {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// `base`, `libraries`, `runtime`, `dependencies` or `function`.
    pub role: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub base: u64,
    /// The runtime's library layer (from a store, or installed).
    pub libraries: u64,
    pub layers: u64,
    /// Cache look-ups, install and the dependency layer (after the base image is known).
    pub dependencies: u64,
    pub outputs: u64,
    pub total: u64,
}

/// Each layer of `image` with its role (`base`, `libraries`, `runtime`, `dependencies`,
/// `function`), in the order assemble() appends them.
fn layer_summaries(
    image: &BuiltImage,
    base: &BaseImage,
    libraries: bool,
    runtime: bool,
    dependencies: bool,
) -> Vec<LayerSummary> {
    let roles = std::iter::repeat_n("base", base.layers.len())
        .chain(libraries.then_some("libraries"))
        .chain(runtime.then_some("runtime"))
        .chain(dependencies.then_some("dependencies"))
        .chain(["function"]);
    image
        .layers
        .iter()
        .zip(roles)
        .map(|(l, role)| LayerSummary {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.descriptor.size(),
            media_type: l.descriptor.media_type().to_string(),
            role,
        })
        .collect()
}

/// What each image of `built` is made of: a single image's at the top level, or (an index)
/// one entry per platform, in the index's order.
pub(super) fn images(
    built: &Built,
    bases: &[BaseImage],
    deps_layers: Vec<Option<ProvidedLayer>>,
    libraries: bool,
    runtime: bool,
) -> (Option<ImageResult>, Vec<PlatformResult>) {
    let mut platforms: Vec<PlatformResult> = built
        .images()
        .into_iter()
        .zip(bases.iter().zip(deps_layers))
        .map(|(image, (base, deps_layer))| PlatformResult {
            platform: Platform::of_config(&base.config).to_string(),
            digest: image.manifest_digest.to_string(),
            image: ImageResult {
                config_digest: image.config_digest.to_string(),
                base: BaseSummary {
                    name: base.name.clone(),
                    digest: base.manifest_digest.to_string(),
                },
                layers: layer_summaries(image, base, libraries, runtime, deps_layer.is_some()),
                dependencies: deps_layer.map(|d| d.summary).unwrap_or_else(DependencySummary::none),
            },
        })
        .collect();
    match built {
        Built::Image(_) => (platforms.pop().map(|p| p.image), Vec::new()),
        Built::Index(_) => (None, platforms),
    }
}
