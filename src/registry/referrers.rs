//! Referrers in a registry: attaching artifacts to an image already pushed, and listing an
//! image's artifacts. A registry with the distribution spec's referrers API
//! (`GET /v2/<name>/referrers/<digest>` answers 200) indexes them itself; for one without it
//! each subject's fallback index (tag `sha256-<hex>`) is read, extended and written back, after
//! the artifacts it lists, so that no tag ever names a manifest the registry lacks.

use std::sync::Arc;

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use super::auth::pull_scopes;
use super::connection::Inner;
use super::error::RegistryError;
use super::send::Req;
use super::sessions::PreparedPushes;
use super::stats::Stats;
use super::{push, BlobSource, PushBlob, PushManifest};
use crate::attest::cosign;
use crate::oci::digest::Digest;
use crate::oci::reference::Reference;
use crate::oci::referrers::{self, Artifact, EMPTY_BLOB};
use crate::oci::{OCI_INDEX, OCI_MANIFEST};

/// What attaching did.
#[derive(Debug, Clone, Default)]
pub struct AttachReport {
    /// Whether the registry has the referrers API (else the fallback tags were written).
    pub referrers_api: bool,
    pub requests: u64,
}

/// The referrers API's list for `subject`, or None when the registry has no such API.
async fn api_list(
    inner: &Inner,
    repo: &Reference,
    subject: &Digest,
    stats: &Arc<Stats>,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let c = inner.counter(stats);
    let conn = inner.conn(&repo.registry, repo.api_host());
    let base = inner.base(&conn, &c).await?;
    let url = base
        .join(&format!("v2/{}/referrers/{}", repo.repository, subject))
        .map_err(|e| RegistryError::InvalidPush(format!("bad referrers URL for {}: {e}", repo.name())))?;
    let req = Req::new(Method::GET, url, format!("GET referrers of {subject}")).header(ACCEPT, OCI_INDEX);
    let (resp, _) = inner
        .send(&conn, &pull_scopes(&repo.repository), &repo.repository, req, &c)
        .await?;
    if resp.status() != StatusCode::OK {
        // 404 (distribution 2.8 and others without the API), or anything else: the fallback.
        tracing::debug!(registry = %repo.registry, status = %resp.status(), "no referrers API: using the tag-schema fallback");
        return Ok(None);
    }
    let bytes = resp.bytes().await.map_err(|e| RegistryError::Protocol {
        registry: repo.registry.clone(),
        what: format!("referrers of {subject}"),
        detail: e.to_string(),
    })?;
    Ok(Some(bytes.to_vec()))
}

/// The manifest `tag` names in `repo` (a fallback index, a signature image), if there is one.
async fn tagged(
    inner: &Inner,
    repo: &Reference,
    tag: &str,
    stats: &Arc<Stats>,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let c = inner.counter(stats);
    let conn = inner.conn(&repo.registry, repo.api_host());
    match super::pull::get_manifest(inner, &conn, repo, tag, &c).await {
        Ok((bytes, _, _)) => Ok(Some(bytes)),
        Err(RegistryError::ManifestUnknown { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The fallback index of `subject`, if there is one.
async fn fallback_index(
    inner: &Inner,
    repo: &Reference,
    subject: &Digest,
    stats: &Arc<Stats>,
) -> Result<Option<Vec<u8>>, RegistryError> {
    tagged(inner, repo, &referrers::fallback_tag(subject), stats).await
}

/// Pushes `artifacts` (each refers to an image in `repo`, which must be there already): their
/// blobs, their manifests by digest and, without the referrers API, each subject's merged
/// fallback index under its tag.
pub(crate) async fn attach(
    inner: &Inner,
    prepared: &PreparedPushes,
    repo: &Reference,
    artifacts: &[Artifact],
) -> Result<AttachReport, RegistryError> {
    let stats = Arc::new(Stats::default());
    let Some(first) = artifacts.first() else {
        return Ok(AttachReport::default());
    };
    let mut subjects: Vec<&Digest> = artifacts.iter().map(|a| &a.subject.digest).collect();
    subjects.dedup();
    // The reads first, side by side: whether the registry has the API, and each subject's
    // fallback index (unused when it has).
    let (api, existing) = tokio::try_join!(
        api_list(inner, repo, &first.subject.digest, &stats),
        futures_util::future::try_join_all(subjects.iter().map(|s| fallback_index(inner, repo, s, &stats)))
    )?;
    let api = api.is_some();
    let pushes = subjects.iter().zip(existing).map(|(subject, existing)| {
        let mine: Vec<&Artifact> = artifacts.iter().filter(|a| &a.subject.digest == *subject).collect();
        async move {
            let mut blobs = vec![PushBlob {
                digest: Digest::of(EMPTY_BLOB).to_string(),
                size: EMPTY_BLOB.len() as u64,
                source: BlobSource::Bytes(EMPTY_BLOB.to_vec()),
            }];
            blobs.extend(mine.iter().map(|a| PushBlob {
                digest: a.document_digest.to_string(),
                size: a.document.len() as u64,
                source: BlobSource::Bytes(a.document.clone()),
            }));
            let manifests: Vec<PushManifest> = mine
                .iter()
                .map(|a| PushManifest {
                    bytes: a.manifest.clone(),
                    media_type: OCI_MANIFEST.into(),
                })
                .collect();
            let report = if api {
                // The registry indexes them as they come: the last goes in as "the" manifest.
                let (last, children) = manifests.split_last().expect("one artifact at least");
                // By digest only: the repository's tag (the image's) must not move to an artifact.
                let target = repo
                    .with_repository(repo.repository.clone())
                    .with_digest(mine.last().expect("one artifact").digest.as_str());
                push::push(inner, prepared, &[target], blobs, children, last.clone(), None).await?
            } else {
                let added: Vec<_> = mine.iter().map(|a| a.descriptor()).collect();
                let index =
                    referrers::merge_index(existing.as_deref(), &added).map_err(|e| RegistryError::Protocol {
                        registry: repo.registry.clone(),
                        what: format!(
                            "the referrers tag {} of {}",
                            referrers::fallback_tag(subject),
                            repo.name()
                        ),
                        detail: format!("{e}; it was left as it is"),
                    })?;
                let target = repo.with_tag(referrers::fallback_tag(subject));
                let index = PushManifest {
                    bytes: index,
                    media_type: OCI_INDEX.into(),
                };
                push::push(inner, prepared, &[target], blobs, &manifests, index, None).await?
            };
            Ok::<u64, RegistryError>(report.requests)
        }
    });
    let requests: u64 = futures_util::future::try_join_all(pushes).await?.into_iter().sum();
    Ok(AttachReport {
        referrers_api: api,
        requests: requests + stats.requests(),
    })
}

/// Adds `signature` to `subject`'s cosign signature image (tag `sha256-<hex>.sig` in `repo`),
/// keeping the signatures already there.
pub(crate) async fn sign(
    inner: &Inner,
    prepared: &PreparedPushes,
    repo: &Reference,
    subject: &Digest,
    signature: &cosign::Signature,
) -> Result<u64, RegistryError> {
    let stats = Arc::new(Stats::default());
    let tag = cosign::signature_tag(subject);
    let existing = tagged(inner, repo, &tag, &stats).await?;
    let (manifest, config) =
        cosign::signature_image(existing.as_deref(), signature).map_err(|e| RegistryError::Protocol {
            registry: repo.registry.clone(),
            what: format!("the signature tag {tag} of {}", repo.name()),
            detail: format!("{e}; it was left as it is"),
        })?;
    let blobs = vec![
        PushBlob {
            digest: Digest::of(&signature.payload).to_string(),
            size: signature.payload.len() as u64,
            source: BlobSource::Bytes(signature.payload.clone()),
        },
        PushBlob {
            digest: Digest::of(&config).to_string(),
            size: config.len() as u64,
            source: BlobSource::Bytes(config),
        },
    ];
    let manifest = PushManifest {
        bytes: manifest,
        media_type: OCI_MANIFEST.into(),
    };
    let report = push::push(inner, prepared, &[repo.with_tag(tag)], blobs, &[], manifest, None).await?;
    Ok(report.requests + stats.requests())
}

/// The document of the artifact `artifact` in `repo`, which must refer to `subject`; its
/// bytes are checked against the digests that name them.
pub(crate) async fn document(
    inner: &Inner,
    repo: &Reference,
    artifact: &Digest,
    subject: &Digest,
) -> Result<Vec<u8>, RegistryError> {
    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&repo.registry, repo.api_host());
    let (manifest, _, _) = super::pull::get_manifest(inner, &conn, repo, artifact.as_str(), &c).await?;
    let (layer, size) = referrers::document_of(&manifest, subject).map_err(|detail| RegistryError::Protocol {
        registry: repo.registry.clone(),
        what: format!("the artifact {artifact} in {}", repo.name()),
        detail,
    })?;
    super::pull::fetch_blob(inner, repo, layer.as_str(), size).await
}

/// The referrers of `subject` in `repo` (digest and artifact type), from the referrers API or
/// the fallback tag.
pub(crate) async fn list(
    inner: &Inner,
    repo: &Reference,
    subject: &Digest,
) -> Result<Vec<(Digest, String)>, RegistryError> {
    let stats = Arc::new(Stats::default());
    let index = match api_list(inner, repo, subject, &stats).await? {
        Some(index) => Some(index),
        None => fallback_index(inner, repo, subject, &stats).await?,
    };
    let Some(index) = index else {
        return Ok(Vec::new());
    };
    referrers::listed(&index).map_err(|e| RegistryError::Protocol {
        registry: repo.registry.clone(),
        what: format!("the referrers of {subject} in {}", repo.name()),
        detail: e.to_string(),
    })
}
