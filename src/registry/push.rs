//! Pushing: blobs (HEAD, cross-repository mount, else an upload: `upload.rs`), then the
//! manifest under its first tag (or by digest), then the other tags, and the record of what the
//! repository holds.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::auth::push_scopes;
use super::connection::{resolve_location, Inner};
use super::error::{ErrorCode, Kind, RegistryError};
use super::known::{KnownBlobs, SMALL_BLOB};
use super::pull::head_blob;
use super::send::Req;
use super::sessions::{self, OpenedSessions, PreparedPushes};
use super::stats::Stats;
use super::upload::{upload, Ctx};
use super::{BlobOutcome, BlobSource, ProgressFn, PushBlob, PushEvent, PushManifest, PushReport};
use crate::oci::reference::{validate_digest, Reference};

pub(crate) async fn push(
    inner: &Inner,
    prepared: &PreparedPushes,
    targets: &[Reference],
    blobs: Vec<PushBlob>,
    children: &[PushManifest],
    manifest: PushManifest,
    progress: Option<ProgressFn>,
) -> Result<PushReport, RegistryError> {
    let Some(first) = targets.first() else {
        return Err(RegistryError::InvalidPush("no target image reference given".into()));
    };
    let (mut known, opened) = match prepared.take(first) {
        Some(p) => (p.known, p.sessions),
        None => (
            KnownBlobs::load(inner.opts.cache_dir.as_deref(), &first.registry, &first.repository),
            None,
        ),
    };
    if !known.exists() {
        return push_once(inner, targets, blobs, children, manifest, progress, &known, opened).await;
    }
    match push_once(
        inner,
        targets,
        blobs.clone(),
        children,
        manifest.clone(),
        progress.clone(),
        &known,
        opened,
    )
    .await
    {
        Err(RegistryError::Refused { codes, .. })
            if codes
                .iter()
                .any(|c| matches!(c, ErrorCode::BlobUnknown | ErrorCode::ManifestBlobUnknown)) =>
        {
            tracing::info!(repository = %first.repository, "the registry lacks blobs it had before; pushing again, checking each blob");
            known.forget();
            push_once(inner, targets, blobs, children, manifest, progress, &known, None).await
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn push_once(
    inner: &Inner,
    targets: &[Reference],
    blobs: Vec<PushBlob>,
    children: &[PushManifest],
    manifest: PushManifest,
    progress: Option<ProgressFn>,
    known: &KnownBlobs,
    opened: Option<OpenedSessions>,
) -> Result<PushReport, RegistryError> {
    let first = targets
        .first()
        .ok_or_else(|| RegistryError::InvalidPush("no target image reference given".into()))?;
    if let Some(other) = targets.iter().find(|t| !t.same_repository(first)) {
        return Err(RegistryError::InvalidPush(format!(
            "all targets of one push must be in one repository, but {first} and {other} differ; push them separately"
        )));
    }
    // Validate the blobs and drop duplicates (the first source wins).
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for b in blobs {
        validate_digest(&b.digest)
            .map_err(|why| RegistryError::InvalidPush(format!("blob digest {:?} {why}", b.digest)))?;
        if seen.insert(b.digest.clone()) {
            unique.push(b);
        }
    }
    let manifest_digest = super::sha256_digest(&manifest.bytes);
    check_manifest(&manifest)?;
    for child in children {
        check_manifest(child)?;
    }
    let child_digests: Vec<String> = children.iter().map(|c| super::sha256_digest(&c.bytes)).collect();

    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&first.registry, first.api_host());
    let mounts: Vec<String> = unique
        .iter()
        .filter_map(|b| match &b.source {
            BlobSource::Registry(src) if src.registry == first.registry && src.repository != first.repository => {
                Some(src.repository.clone())
            }
            _ => None,
        })
        .collect();
    let ctx = Ctx {
        inner,
        conn: conn.clone(),
        repo: first.repository.clone(),
        scopes: push_scopes(&first.repository, &mounts),
        c: c.clone(),
        progress,
        known,
        opened,
    };
    // Ping and get the one token for the whole push before going parallel.
    inner.authorization(&conn, &ctx.scopes, &ctx.repo, &c).await?;

    // Everything the manifest points at must be there: pushed now, or already present
    // (checked before anything is uploaded).
    let base = inner.base(&conn, &c).await?;
    let pushed: HashSet<&str> = unique
        .iter()
        .map(|b| b.digest.as_str())
        .chain(child_digests.iter().map(String::as_str))
        .collect();
    let references = std::iter::once(&manifest)
        .chain(children)
        .flat_map(|m| referenced(&m.bytes));
    for (digest, is_manifest) in references {
        if pushed.contains(digest.as_str()) || known.contains(&digest) {
            continue;
        }
        validate_digest(&digest).map_err(|why| {
            RegistryError::InvalidPush(format!("the manifest references digest {digest:?}, which {why}"))
        })?;
        let present = if is_manifest {
            manifest_exists(&ctx, &base, &digest).await?
        } else {
            head_blob(inner, &conn, &ctx.scopes, &ctx.repo, &digest, &c).await?
        };
        if !present {
            return Err(RegistryError::InvalidPush(format!(
                "the manifest references {digest}, which is neither among the blobs to push nor in {}; nothing was pushed",
                first.name()
            )));
        }
    }

    let outcomes: Vec<(String, BlobOutcome)> = futures_util::stream::iter(unique.iter().map(|b| push_blob(&ctx, b)))
        .buffer_unordered(inner.opts.parallelism)
        .try_collect()
        .await?;

    // An index's manifests go in by digest once their blobs are there, side by side.
    futures_util::future::try_join_all(
        children
            .iter()
            .zip(&child_digests)
            .map(|(child, digest)| put_manifest(&ctx, &base, digest, child, digest)),
    )
    .await?;

    // The manifest goes in last, under its first tag when it has one (one request instead of
    // two: the registry checks the digest and every blob either way), else by digest.
    let mut tagged = HashSet::new();
    let first_tag = targets.iter().find_map(|t| t.tag.clone());
    let unused = match &ctx.opened {
        Some(o) => o.rest().await,
        None => Vec::new(),
    };
    let (put, _) = tokio::join!(
        put_manifest(
            &ctx,
            &base,
            first_tag.as_deref().unwrap_or(&manifest_digest),
            &manifest,
            &manifest_digest,
        ),
        futures_util::future::join_all(unused.into_iter().map(|u| sessions::cancel(
            inner,
            &conn,
            &ctx.scopes,
            &ctx.repo,
            u,
            &c
        )))
    );
    put?;
    ctx.emit(PushEvent::ManifestPushed {
        digest: manifest_digest.clone(),
    });
    if let Some(tag) = first_tag {
        tagged.insert(tag.clone());
        ctx.emit(PushEvent::Tagged {
            reference: first.with_tag(tag).to_string(),
        });
    }
    for t in targets {
        if let Some(tag) = &t.tag {
            if tagged.insert(tag.clone()) {
                put_manifest(&ctx, &base, tag, &manifest, &manifest_digest).await?;
                ctx.emit(PushEvent::Tagged {
                    reference: t.with_tag(tag.clone()).to_string(),
                });
            }
        }
        if let Some(d) = &t.digest {
            if d != &manifest_digest {
                return Err(RegistryError::InvalidPush(format!(
                    "target {t} names digest {d}, but the manifest's digest is {manifest_digest}"
                )));
            }
        }
    }

    let referenced_blobs: Vec<String> = std::iter::once(&manifest)
        .chain(children)
        .flat_map(|m| referenced(&m.bytes))
        .filter(|(_, is_manifest)| !is_manifest)
        .map(|(d, _)| d)
        .collect();
    known.save(
        unique
            .iter()
            .map(|b| b.digest.as_str())
            .chain(referenced_blobs.iter().map(String::as_str)),
    );
    let order: Vec<(String, BlobOutcome)> = unique
        .iter()
        .map(|b| {
            let o = outcomes
                .iter()
                .find(|(d, _)| d == &b.digest)
                .map(|(_, o)| *o)
                .unwrap_or(BlobOutcome::Existed);
            (b.digest.clone(), o)
        })
        .collect();
    let requests = stats.requests() + ctx.opened.as_ref().map_or(0, |o| o.requests());
    tracing::info!(
        target = %first.name(),
        digest = %manifest_digest,
        requests,
        bytes_uploaded = stats.bytes(),
        "pushed"
    );
    Ok(PushReport {
        digest: manifest_digest,
        requests,
        bytes_uploaded: stats.bytes(),
        blobs: order,
    })
}

/// The manifest must be JSON, and its `mediaType` (when present) must match the one given.
fn check_manifest(m: &PushManifest) -> Result<(), RegistryError> {
    let v: serde_json::Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| RegistryError::InvalidPush(format!("the manifest is not valid JSON: {e}")))?;
    if let Some(mt) = v.get("mediaType").and_then(|x| x.as_str()) {
        if mt != m.media_type {
            return Err(RegistryError::InvalidPush(format!(
                "the manifest says mediaType {mt:?} but is to be pushed as {:?}; they must be equal",
                m.media_type
            )));
        }
    }
    if m.media_type.is_empty() {
        return Err(RegistryError::InvalidPush("the manifest has no media type".into()));
    }
    Ok(())
}

/// Digests a manifest points at: (digest, is a manifest itself).
fn referenced(bytes: &[u8]) -> Vec<(String, bool)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let digest_of = |d: &serde_json::Value| d.get("digest").and_then(|x| x.as_str()).map(str::to_string);
    if let Some(d) = v.get("config").and_then(digest_of) {
        out.push((d, false));
    }
    for l in v.get("layers").and_then(|l| l.as_array()).into_iter().flatten() {
        // Foreign (non-distributable) layers live elsewhere.
        let foreign = l
            .get("mediaType")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.contains("foreign") || m.contains("nondistributable"));
        if let (Some(d), false) = (digest_of(l), foreign) {
            out.push((d, false));
        }
    }
    for m in v.get("manifests").and_then(|l| l.as_array()).into_iter().flatten() {
        if let Some(d) = digest_of(m) {
            out.push((d, true));
        }
    }
    out
}

async fn manifest_exists(ctx: &Ctx<'_>, base: &Url, digest: &str) -> Result<bool, RegistryError> {
    let url = ctx.url(base, &format!("manifests/{digest}"))?;
    let what = format!("HEAD manifest {digest}");
    let req =
        Req::new(Method::HEAD, url, what.clone()).header(reqwest::header::ACCEPT, super::pull::accept_manifests());
    let (resp, _) = ctx.inner.send(&ctx.conn, &ctx.scopes, &ctx.repo, req, &ctx.c).await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(ctx
            .inner
            .status_error(&ctx.conn, &ctx.repo, &what, Kind::Other, resp)
            .await),
    }
}

async fn put_manifest(
    ctx: &Ctx<'_>,
    base: &Url,
    reference: &str,
    m: &PushManifest,
    digest: &str,
) -> Result<(), RegistryError> {
    let url = ctx.url(base, &format!("manifests/{reference}"))?;
    let what = format!("manifest {reference}");
    let req = Req::new(Method::PUT, url, format!("PUT manifest {reference}"))
        .header(CONTENT_TYPE, &m.media_type)
        .body(m.bytes.clone());
    let (resp, _) = ctx.inner.send(&ctx.conn, &ctx.scopes, &ctx.repo, req, &ctx.c).await?;
    if !resp.status().is_success() {
        return Err(ctx
            .inner
            .status_error(&ctx.conn, &ctx.repo, &what, Kind::Other, resp)
            .await);
    }
    if let Some(got) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if got != digest {
            return Err(RegistryError::DigestMismatch {
                registry: ctx.conn.registry.clone(),
                what: format!("the manifest pushed to {}", ctx.repo),
                expected: digest.to_string(),
                actual: got.to_string(),
            });
        }
    }
    tracing::debug!(repository = %ctx.repo, reference, "manifest pushed");
    Ok(())
}

async fn push_blob(ctx: &Ctx<'_>, blob: &PushBlob) -> Result<(String, BlobOutcome), RegistryError> {
    ctx.emit(PushEvent::BlobStarted {
        digest: blob.digest.clone(),
        size: blob.size,
    });
    let outcome = push_blob_inner(ctx, blob).await?;
    tracing::debug!(repository = %ctx.repo, digest = %blob.digest, outcome = ?outcome, "blob done");
    ctx.emit(PushEvent::BlobDone {
        digest: blob.digest.clone(),
        outcome,
    });
    Ok((blob.digest.clone(), outcome))
}

async fn push_blob_inner(ctx: &Ctx<'_>, blob: &PushBlob) -> Result<BlobOutcome, RegistryError> {
    let inner = ctx.inner;
    if ctx.known.contains(&blob.digest) {
        return Ok(BlobOutcome::Existed);
    }
    let new_small_content = ctx.known.exists()
        && blob.size <= SMALL_BLOB
        && matches!(blob.source, BlobSource::File(_) | BlobSource::Bytes(_));
    if !new_small_content && head_blob(inner, &ctx.conn, &ctx.scopes, &ctx.repo, &blob.digest, &ctx.c).await? {
        return Ok(BlobOutcome::Existed);
    }
    let base = inner.base(&ctx.conn, &ctx.c).await?;
    let mut session: Option<Url> = None;
    if let BlobSource::Registry(src) = &blob.source {
        if src.registry == ctx.conn.registry && src.repository != ctx.repo {
            match mount(ctx, &base, blob, &src.repository).await {
                Ok(Mount::Mounted) => return Ok(BlobOutcome::Mounted),
                Ok(Mount::Session(url)) => session = Some(url),
                Ok(Mount::Failed(why)) => {
                    tracing::debug!(digest = %blob.digest, from = %src.repository, why = %why, "mount failed; uploading");
                }
                Err(e) => {
                    tracing::debug!(digest = %blob.digest, from = %src.repository, error = %e, "mount failed; uploading");
                }
            }
        }
    }
    upload(ctx, blob, session).await?;
    Ok(match blob.source {
        BlobSource::Registry(_) => BlobOutcome::Copied,
        _ => BlobOutcome::Uploaded,
    })
}

enum Mount {
    Mounted,
    /// The registry started an upload instead (202): upload there.
    Session(Url),
    Failed(String),
}

async fn mount(ctx: &Ctx<'_>, base: &Url, blob: &PushBlob, from: &str) -> Result<Mount, RegistryError> {
    let mut url = ctx.url(base, "blobs/uploads/")?;
    url.query_pairs_mut()
        .append_pair("mount", &blob.digest)
        .append_pair("from", from);
    let req = Req::new(Method::POST, url, format!("mount blob {}", blob.digest))
        .header(CONTENT_LENGTH, "0")
        .body(Vec::new());
    let (resp, req_url) = ctx.inner.send(&ctx.conn, &ctx.scopes, &ctx.repo, req, &ctx.c).await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let digest_header = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match status {
        StatusCode::CREATED => {
            if digest_header.is_some_and(|d| d != blob.digest) {
                return Ok(Mount::Failed("the registry mounted a blob with another digest".into()));
            }
            Ok(Mount::Mounted)
        }
        StatusCode::ACCEPTED => match location.map(|l| resolve_location(&req_url, &l)) {
            Some(Ok(u)) => Ok(Mount::Session(u)),
            _ => Ok(Mount::Failed("202 without a usable Location".into())),
        },
        s => Ok(Mount::Failed(format!("HTTP {s}"))),
    }
}
