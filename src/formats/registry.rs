//! Registries (`docker://REF`, `--push`): a base pulled as its manifest and config, its layers
//! left in the registry (mounted or copied there by a push, downloaded only for local outputs),
//! and images pushed through [`crate::registry::Client`], which owns the HTTP side.

use super::{checked_digest, diff_ids, invalid, parse_config, parse_manifest, BlobSummary, Location, OutputSummary};
use super::{ReadError, WriteContext, WriteError};
use crate::attest::cosign;
use crate::oci::digest::Digest;
use crate::oci::index::Built;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::{BaseImage, BlobLocation, BuiltImage, ImageLayer};
use crate::registry::{BlobOutcome, BlobSource, Client, PushBlob, PushManifest, RegistryError};
use std::path::Path;

/// Reads the manifest (for `platform`, when `reference` names an index) and config that
/// `reference` names.
pub async fn read(
    name: &str,
    reference: &Reference,
    platform: &Platform,
    client: &Client,
) -> Result<BaseImage, ReadError> {
    let registry_err = |source| ReadError::Registry {
        name: name.into(),
        source: Box::new(source),
    };
    let pulled = client
        .pull_manifest_for(reference, platform)
        .await
        .map_err(registry_err)?;
    let (manifest, family) = parse_manifest(name, &pulled.bytes, &pulled.media_type)?;
    let config_bytes = client
        .fetch_blob(reference, manifest.config().digest().as_ref(), manifest.config().size())
        .await
        .map_err(registry_err)?;
    let config = parse_config(name, &config_bytes)?;
    let ids = diff_ids(name, &config, manifest.layers().len())?;
    let manifest_digest: Digest = pulled
        .digest
        .parse()
        .map_err(|e| invalid(name, format!("the registry's manifest digest: {e}")))?;
    let repository = reference.with_digest(manifest_digest.as_str());
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers().iter().zip(ids) {
        layers.push(ImageLayer {
            digest: checked_digest(name, descriptor.digest())?,
            descriptor: descriptor.clone(),
            diff_id,
            location: BlobLocation::Registry(repository.clone()),
        });
    }
    Ok(BaseImage {
        name: reference.to_string(),
        manifest_digest,
        family,
        config,
        layers,
    })
}

/// The registry outputs, a group per repository: tags of one repository go in one push.
pub fn push_groups(outputs: &[Location]) -> Vec<Vec<&Reference>> {
    let mut groups: Vec<Vec<&Reference>> = Vec::new();
    for output in outputs {
        if let Location::Registry(r) = output {
            match groups.iter_mut().find(|g| g[0].same_repository(r)) {
                Some(group) => group.push(r),
                None => groups.push(vec![r]),
            }
        }
    }
    groups
}

/// Pushes `built` under every tag in `targets` (one repository): blobs first (each once, shared
/// layers of an index too), then each platform's manifest by digest, the index and tags last.
pub async fn push(
    targets: &[&Reference],
    built: &Built,
    ctx: &WriteContext<'_>,
) -> Result<Vec<OutputSummary>, WriteError> {
    let targets: Vec<Reference> = targets.iter().map(|r| (*r).clone()).collect();
    let client = ctx.client.ok_or_else(|| WriteError::Invalid {
        output: format!("docker://{}", targets[0]),
        message: "no registry client was set up".into(),
    })?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    for image in built.images() {
        blobs.extend(push_blobs(image, &targets[0], ctx.mount_from));
        if let Built::Index(_) = built {
            children.push(PushManifest {
                bytes: image.manifest.clone(),
                media_type: image.manifest_media_type.clone(),
            });
        }
    }
    let manifest = PushManifest {
        bytes: built.bytes().to_vec(),
        media_type: built.media_type().to_string(),
    };
    let report = client
        .push_with_children(&targets, blobs, children, manifest, None)
        .await?;
    if report.digest != *built.digest() {
        return Err(WriteError::Invalid {
            output: format!("docker://{}", targets[0]),
            message: format!(
                "registry {} stored the manifest as {} instead of {}",
                targets[0].registry,
                report.digest,
                built.digest()
            ),
        });
    }
    // Referrers and cosign signatures once the images they refer to are in, side by side:
    // signatures of the index (or the image), and of each platform's image of an index.
    let attach = async {
        if ctx.referrers.is_empty() {
            return Ok(0);
        }
        let attached = client.attach(&targets[0], ctx.referrers).await?;
        tracing::info!(
            repository = %targets[0].name(),
            artifacts = ctx.referrers.len(),
            requests = attached.requests,
            referrers_api = attached.referrers_api,
            "referrers attached"
        );
        Ok::<u64, crate::registry::RegistryError>(attached.requests)
    };
    let mut signed: Vec<&Digest> = Vec::new();
    if ctx.signer.is_some() {
        signed.push(built.digest());
        if let Built::Index(index) = built {
            signed.extend(index.images.iter().map(|(_, i)| &i.manifest_digest));
        }
    }
    let repository = targets[0].name();
    let signatures = futures_util::future::try_join_all(signed.iter().map(|subject| {
        let signer = ctx.signer.expect("signing only with a key");
        let payload = cosign::payload(&repository, subject);
        let signature = cosign::Signature {
            signature: signer.sign(&payload),
            payload,
        };
        let (client, target) = (client, &targets[0]);
        async move { client.sign(target, subject, &signature).await }
    }));
    let (attach_requests, sign_requests) = tokio::try_join!(attach, signatures)?;
    if !signed.is_empty() {
        tracing::info!(repository = %repository, signatures = signed.len(), "signed");
    }
    let requests = report.requests + attach_requests + sign_requests.iter().sum::<u64>();
    let mut summaries = Vec::new();
    for target in &targets {
        tracing::info!(output = %target, requests, bytes = report.bytes_uploaded, "pushed");
        summaries.push(OutputSummary {
            output: format!("docker://{target}"),
            image: Some(target.with_digest(&report.digest).to_string()),
            http_requests: Some(requests),
            bytes_uploaded: Some(report.bytes_uploaded),
            blobs: report
                .blobs
                .iter()
                .map(|(digest, outcome)| BlobSummary {
                    digest: digest.clone(),
                    outcome: match outcome {
                        BlobOutcome::Existed => "existed",
                        BlobOutcome::Mounted => "mounted",
                        BlobOutcome::Uploaded => "uploaded",
                        BlobOutcome::Copied => "copied",
                    },
                })
                .collect(),
        });
    }
    Ok(summaries)
}

/// The image's blobs for a push to `target`; a blob that `mount_from` says another repository of
/// the same registry has (the dependency cache) is mounted from there rather than uploaded.
fn push_blobs(image: &BuiltImage, target: &Reference, mount_from: &[(Digest, Reference)]) -> Vec<PushBlob> {
    let mut blobs: Vec<PushBlob> = Vec::new();
    for layer in &image.layers {
        let digest = &layer.digest;
        if blobs.iter().any(|b| b.digest == *digest) {
            continue;
        }
        let elsewhere = mount_from
            .iter()
            .find(|(d, r)| d == digest && r.registry == target.registry && !r.same_repository(target));
        let source = match (&layer.location, elsewhere) {
            (_, Some((_, r))) => BlobSource::Registry(r.clone()),
            (BlobLocation::File(path), None) => BlobSource::File(path.clone()),
            (BlobLocation::Registry(r), None) => BlobSource::Registry(r.clone()),
        };
        blobs.push(PushBlob {
            digest: digest.to_string(),
            size: layer.descriptor.size(),
            source,
        });
    }
    blobs.push(PushBlob {
        digest: image.config_digest.to_string(),
        size: image.config.len() as u64,
        source: BlobSource::Bytes(image.config.clone()),
    });
    blobs
}

/// A copy of the image whose base layers (if they live in a registry) are downloaded to `work`.
pub async fn download_base_layers(
    image: &BuiltImage,
    client: Option<&Client>,
    work: &Path,
) -> Result<BuiltImage, RegistryError> {
    let mut image = image.clone();
    for (i, layer) in image.layers.iter_mut().enumerate() {
        if let BlobLocation::Registry(r) = &layer.location {
            let client = client.ok_or_else(|| {
                RegistryError::InvalidOptions(
                    "a base layer lives in a registry but no registry client was set up".into(),
                )
            })?;
            let path = work.join(format!("downloaded-layer-{i}"));
            client
                .download_blob(r, layer.digest.as_str(), layer.descriptor.size(), &path)
                .await?;
            layer.location = BlobLocation::File(path);
        }
    }
    Ok(image)
}
