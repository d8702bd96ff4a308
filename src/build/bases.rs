//! The base image for each platform a build is for.

use super::BuildOptions;
use crate::formats::{self, Location};
use crate::oci::platform::{Platform, Platforms, FUNCTION_PLATFORMS};
use crate::oci::BaseImage;
use crate::registry::Client;
use anyhow::{bail, Result};
use std::path::Path;

/// The base image for each platform the options ask for, in their order. A base that holds
/// one image serves only its own platform; `--platform all` takes those of the base's that
/// functions run on ([`FUNCTION_PLATFORMS`]).
pub(super) async fn read_bases(
    location: &Location,
    opts: &BuildOptions,
    work: &Path,
    client: Option<&Client>,
) -> Result<Vec<BaseImage>> {
    let wanted: Vec<Platform> = match &opts.platforms {
        Platforms::One(_) => {
            return Ok(vec![
                formats::read(location, &opts.registry.platform, work, client).await?,
            ]);
        }
        Platforms::List(list) => list.clone(),
        Platforms::All => match formats::platforms(location, client).await? {
            None => {
                return Ok(vec![
                    formats::read(location, &opts.registry.platform, work, client).await?,
                ])
            }
            Some(offered) => {
                let usable: Vec<Platform> = offered
                    .iter()
                    .filter(|p| {
                        FUNCTION_PLATFORMS
                            .iter()
                            .any(|(os, arch)| p.os == *os && p.architecture == *arch)
                    })
                    .cloned()
                    .collect();
                if usable.is_empty() {
                    let names: Vec<String> = offered.iter().map(ToString::to_string).collect();
                    bail!(
                        "base image {location}: --platform all: it has none of the platforms functions run on (linux/amd64, linux/arm64); it has: {}",
                        names.join(", ")
                    );
                }
                usable
            }
        },
    };
    let bases =
        futures_util::future::try_join_all(wanted.iter().map(|p| formats::read(location, p, work, client))).await?;
    for (want, base) in wanted.iter().zip(&bases) {
        let got = Platform::of_config(&base.config);
        if !want.matches(&got.os, &got.architecture, got.variant.as_deref()) {
            bail!("base image {location}: it holds one image, for {got}, so it has no {want}: use a multi-platform base (an image index)");
        }
    }
    Ok(bases)
}
