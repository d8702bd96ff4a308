//! `fnbuild sbom IMAGE`: prints the SBOM attached to an image, from a registry (referrers API
//! or fallback tag) or an OCI layout, after checking that it refers to that very image and
//! that its bytes are the ones its manifest names.

use crate::formats::{layout, Location};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::referrers;
use crate::registry::{Client, RegistryOptions};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

impl Format {
    fn artifact_type(self) -> &'static str {
        match self {
            Format::Spdx => super::SPDX_JSON,
            Format::Cyclonedx => super::CYCLONEDX_JSON,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// The image: REF or docker://REF in a registry, or oci:DIR[:TAG].
    #[arg(value_name = "IMAGE", value_parser = Location::base)]
    image: Location,
    /// Which document to print.
    #[arg(long, value_enum, default_value = "spdx")]
    format: Format,
    /// The platform's image, when IMAGE is an index (default: linux on this machine's architecture).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Allow plain HTTP (and unverified TLS) for this registry; loopback registries need no flag.
    #[arg(long, value_name = "HOST[:PORT]", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// A docker config.json to take registry credentials from.
    #[arg(long, value_name = "FILE")]
    registry_config: Option<std::path::PathBuf>,
    /// Trust this PEM CA bundle for registries (private CAs). Repeatable.
    #[arg(long, value_name = "FILE")]
    ca_cert: Vec<std::path::PathBuf>,
}

pub async fn run(args: SbomArgs) -> Result<()> {
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let wanted = args.format.artifact_type();
    let document = match &args.image {
        Location::Registry(r) => {
            let client = Client::new(RegistryOptions {
                insecure_registries: args.insecure_registry.clone(),
                ca_certs: args.ca_cert.clone(),
                registry_config: args.registry_config.clone(),
                platform: platform.clone(),
                ..RegistryOptions::default()
            })?;
            from_registry(&client, r, &platform, wanted).await?
        }
        Location::OciLayout { dir, tag } => {
            from_layout(&args.image.to_string(), dir, tag.as_deref(), &platform, wanted)?
        }
        other => bail!("{other}: SBOMs are read from registries and OCI layouts (docker://REF or oci:DIR[:TAG])"),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&document).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) wanted no more.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the SBOM to stdout"),
    }
}

async fn from_registry(client: &Client, r: &Reference, platform: &Platform, wanted: &str) -> Result<Vec<u8>> {
    let image = client.pull_manifest_for(r, platform).await?;
    let subject: Digest = image.digest.parse().map_err(anyhow::Error::msg)?;
    let listed = client.referrers(r, &subject).await?;
    let Some((artifact, _)) = listed.iter().find(|(_, t)| t == wanted) else {
        bail!("{r} ({subject}) has no {wanted} SBOM attached ({})", described(&listed));
    };
    Ok(client.referrer_document(r, artifact, &subject).await?)
}

fn from_layout(name: &str, dir: &Path, tag: Option<&str>, platform: &Platform, wanted: &str) -> Result<Vec<u8>> {
    let image = layout::read(name, dir, tag, platform)?;
    let subject = image.manifest_digest;
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).with_context(|| format!("{name}: cannot read index.json"))?,
    )
    .with_context(|| format!("{name}: index.json is malformed"))?;
    let read_blob = |digest: &Digest| -> Result<Vec<u8>> {
        let bytes = std::fs::read(layout::blob_path(dir, digest))
            .with_context(|| format!("{name}: blob {digest} is missing"))?;
        if Digest::of(&bytes) != *digest {
            bail!("{name}: blob {digest} does not hold what its digest says: it was altered");
        }
        Ok(bytes)
    };
    let mut listed = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let (Some(kind), Some(digest)) = (m["artifactType"].as_str(), m["digest"].as_str()) else {
            continue;
        };
        let digest: Digest = digest.parse().map_err(anyhow::Error::msg)?;
        let Ok((layer, _)) = referrers::document_of(&read_blob(&digest)?, &subject) else {
            continue; // another image's
        };
        if kind == wanted {
            return read_blob(&layer);
        }
        listed.push((digest, kind.to_string()));
    }
    bail!(
        "{name} ({subject}) has no {wanted} SBOM attached ({})",
        described(&listed)
    )
}

fn described(listed: &[(Digest, String)]) -> String {
    match listed.len() {
        0 => "no referrers: build it with --sbom".into(),
        _ => {
            let kinds: Vec<&str> = listed.iter().map(|(_, k)| k.as_str()).collect();
            format!("its referrers: {}", kinds.join(", "))
        }
    }
}
