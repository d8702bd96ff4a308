//! Pulling: manifests (with platform selection from indexes), small blobs, blob downloads,
//! and the local cache by digest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::auth::pull_scopes;
use super::connection::{Conn, Inner};
use super::error::Kind;
use super::error::RegistryError;
use super::retry::{unreachable, Attempt, Backoff, Failure, Retries};
use super::send::Req;
use super::stats::{Counter, Stats};
use super::{digest_like, is_index, sniff_media_type, Hasher, PulledManifest, RATE_WINDOW};
use super::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::oci::platform::{self, Platform};
use crate::oci::reference::{validate_digest, Reference};

/// Small blobs fetched into memory are capped (configs are kilobytes).
const MAX_SMALL_BLOB: u64 = 64 << 20;
const MAX_MANIFEST: usize = 4 << 20;

/// The manifests fnbuild reads, in the order of preference of its Accept header.
const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The Accept header of a manifest request (joined once).
pub(crate) fn accept_manifests() -> &'static str {
    static ACCEPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| MANIFEST_TYPES.join(", "));
    &ACCEPT
}

fn check_digest(registry: &str, digest: &str) -> Result<(), RegistryError> {
    validate_digest(digest).map_err(|why| RegistryError::InvalidPush(format!("digest {digest:?} for {registry} {why}")))
}

pub(crate) fn cache_path(inner: &Inner, kind: &str, digest: &str) -> Option<PathBuf> {
    let dir = inner.opts.cache_dir.as_ref()?;
    let (alg, hex) = digest.split_once(':')?;
    Some(dir.join(kind).join(alg).join(hex))
}

/// Read a cached object, checking that it still has its digest.
fn cache_read(inner: &Inner, kind: &str, digest: &str) -> Option<Vec<u8>> {
    let path = cache_path(inner, kind, digest)?;
    let bytes = std::fs::read(&path).ok()?;
    if digest_like(digest, &bytes) == digest {
        tracing::debug!(digest, kind, "cache hit");
        Some(bytes)
    } else {
        tracing::warn!(path = %path.display(), "cached object does not match its digest; fetching it again");
        let _ = std::fs::remove_file(&path);
        None
    }
}

/// Write an object into the cache atomically (failures only log: the cache is an optimisation).
fn cache_write(inner: &Inner, kind: &str, digest: &str, bytes: &[u8]) {
    let Some(path) = cache_path(inner, kind, digest) else {
        return;
    };
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot write to the cache");
    }
}

pub(crate) async fn pull_manifest(
    inner: &Inner,
    r: &Reference,
    want: &Platform,
) -> Result<PulledManifest, RegistryError> {
    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&r.registry, r.api_host());
    let (bytes, media_type, digest) = get_manifest(inner, &conn, r, r.manifest_ref(), &c).await?;
    if !is_index(&media_type) {
        check_image_manifest(&conn, r, &media_type)?;
        return Ok(PulledManifest {
            digest,
            media_type,
            bytes,
            index_digest: None,
        });
    }
    let index: platform::IndexDoc = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        registry: r.registry.clone(),
        what: format!("index of {r}"),
        detail: format!("it is not a valid image index: {e}"),
    })?;
    let entry = platform::select(&index, want).map_err(|available| RegistryError::PlatformNotFound {
        reference: r.to_string(),
        wanted: want.to_string(),
        available: if available.is_empty() {
            "no platforms listed".into()
        } else {
            available.join(", ")
        },
    })?;
    let child_digest = entry.digest.clone();
    check_digest(&r.registry, &child_digest)?;
    let (child, child_type, got) = get_manifest(inner, &conn, r, &child_digest, &c).await?;
    if is_index(&child_type) {
        return Err(RegistryError::Protocol {
            registry: r.registry.clone(),
            what: format!("manifest {child_digest} of {r}"),
            detail: "an index entry for a platform points at another index; fnbuild needs an image manifest".into(),
        });
    }
    check_image_manifest(&conn, r, &child_type)?;
    debug_assert_eq!(got, child_digest);
    Ok(PulledManifest {
        digest: child_digest,
        media_type: child_type,
        bytes: child,
        index_digest: Some(digest),
    })
}

/// The platforms the index that `r` names offers (attestations left out), or `None` when it
/// names a single image.
pub(crate) async fn index_platforms(inner: &Inner, r: &Reference) -> Result<Option<Vec<Platform>>, RegistryError> {
    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&r.registry, r.api_host());
    let (bytes, media_type, _) = get_manifest(inner, &conn, r, r.manifest_ref(), &c).await?;
    if !is_index(&media_type) {
        return Ok(None);
    }
    let index: platform::IndexDoc = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        registry: r.registry.clone(),
        what: format!("index of {r}"),
        detail: format!("it is not a valid image index: {e}"),
    })?;
    Ok(Some(platform::offered(&index)))
}

fn check_image_manifest(conn: &Conn, r: &Reference, media_type: &str) -> Result<(), RegistryError> {
    if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        return Ok(());
    }
    let detail = if media_type.contains("manifest.v1") {
        "it is a Docker schema 1 manifest, which is obsolete; rebuild or re-push the image with a current tool"
            .to_string()
    } else {
        format!("its media type {media_type:?} is not an OCI or Docker v2 image manifest")
    };
    Err(RegistryError::Protocol {
        registry: conn.registry.clone(),
        what: format!("manifest of {r}"),
        detail,
    })
}

/// GET one manifest (cache first when asked by digest). Returns bytes, media type, digest.
pub(crate) async fn get_manifest(
    inner: &Inner,
    conn: &Conn,
    r: &Reference,
    reference: &str,
    c: &Counter,
) -> Result<(Vec<u8>, String, String), RegistryError> {
    let by_digest = reference.contains(':');
    if by_digest {
        check_digest(&r.registry, reference)?;
        if let Some(bytes) = cache_read(inner, "manifests", reference) {
            if let Some(mt) = sniff_media_type(&bytes) {
                return Ok((bytes, mt, reference.to_string()));
            }
        }
    }
    let base = inner.base(conn, c).await?;
    let url = base
        .join(&format!("v2/{}/manifests/{}", r.repository, reference))
        .map_err(|e| RegistryError::InvalidPush(format!("bad manifest URL for {r}: {e}")))?;
    let what = format!("GET manifest {reference}");
    let req = Req::new(Method::GET, url, what.clone()).header(ACCEPT, accept_manifests());
    let scopes = pull_scopes(&r.repository);
    let (resp, _) = inner.send(conn, &scopes, &r.repository, req, c).await?;
    if !resp.status().is_success() {
        return Err(inner
            .status_error(conn, &r.repository, &what, Kind::Manifest(reference), resp)
            .await);
    }
    let header_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let too_large = || RegistryError::Protocol {
        registry: r.registry.clone(),
        what: format!("manifest {reference} of {}", r.name()),
        detail: "it is larger than 4 MiB".into(),
    };
    if resp.content_length().is_some_and(|l| l > MAX_MANIFEST as u64) {
        return Err(too_large());
    }
    // Read up to the cap whatever the headers said (a chunked body has no length).
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let mut one = Backoff::new(&inner.opts.retry);
            one.attempt();
            unreachable(conn, &base, &e, &one)
        })?;
        if bytes.len() + chunk.len() > MAX_MANIFEST {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let expected = if by_digest {
        Some(reference.to_string())
    } else {
        header_digest.filter(|d| validate_digest(d).is_ok())
    };
    let digest = match &expected {
        Some(d) => {
            let actual = digest_like(d, &bytes);
            if &actual != d {
                return Err(RegistryError::DigestMismatch {
                    registry: r.registry.clone(),
                    what: format!("manifest {reference} of {}", r.name()),
                    expected: d.clone(),
                    actual,
                });
            }
            actual
        }
        None => super::sha256_digest(&bytes),
    };
    // The body's own mediaType wins over a generic Content-Type.
    let media_type = match (sniff_media_type(&bytes), header_type) {
        (Some(m), _) => m,
        (None, Some(h)) if MANIFEST_TYPES.contains(&h.as_str()) => h,
        (None, Some(h)) => h,
        (None, None) => String::new(),
    };
    cache_write(inner, "manifests", &digest, &bytes);
    Ok((bytes, media_type, digest))
}

pub(crate) async fn fetch_blob(
    inner: &Inner,
    r: &Reference,
    digest: &str,
    size: u64,
) -> Result<Vec<u8>, RegistryError> {
    check_digest(&r.registry, digest)?;
    if size > MAX_SMALL_BLOB {
        return Err(RegistryError::Protocol {
            registry: r.registry.clone(),
            what: format!("blob {digest} of {}", r.name()),
            detail: format!("its descriptor says {size} bytes, more than the 64 MiB a config may have"),
        });
    }
    if let Some(bytes) = cache_read(inner, "blobs", digest) {
        return Ok(bytes);
    }
    let (bytes, (), _) = get_blob(inner, r, digest, size, Some(MAX_SMALL_BLOB), Path::new(digest), || {
        Ok((Vec::new(), ()))
    })
    .await?;
    cache_write(inner, "blobs", digest, &bytes);
    Ok(bytes)
}

pub(crate) async fn download_blob(
    inner: &Inner,
    r: &Reference,
    digest: &str,
    size: u64,
    dest: &Path,
) -> Result<u64, RegistryError> {
    check_digest(&r.registry, digest)?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (file, tmp_path, size) = get_blob(inner, r, digest, size, None, dest, || {
        let tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| RegistryError::io("cannot create a file in", dir, e))?;
        let (file, path) = tmp.into_parts();
        Ok((tokio::fs::File::from_std(file), path))
    })
    .await?;
    drop(file);
    tmp_path
        .persist(dest)
        .map_err(|e| RegistryError::io("cannot write", dest, e.error))?;
    Ok(size)
}

/// GET a blob into a fresh sink from `open` (one per attempt; a dropped connection starts
/// over), checking while it streams that it stays within `size` (the descriptor's) and `cap`,
/// and afterwards its size and digest; a transfer slower than the minimum rate over a whole
/// [`RATE_WINDOW`] is abandoned. Returns the sink, what `open` gave with it, and the size.
/// `dest` names the sink in errors.
#[allow(clippy::too_many_arguments)]
async fn get_blob<W, T>(
    inner: &Inner,
    r: &Reference,
    digest: &str,
    size: u64,
    cap: Option<u64>,
    dest: &Path,
    mut open: impl FnMut() -> Result<(W, T), RegistryError>,
) -> Result<(W, T, u64), RegistryError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&r.registry, r.api_host());
    let base = inner.base(&conn, &c).await?;
    let url = base
        .join(&format!("v2/{}/blobs/{}", r.repository, digest))
        .map_err(|e| RegistryError::InvalidPush(format!("bad blob URL for {r}: {e}")))?;
    let what = format!("GET blob {digest}");
    let scopes = pull_scopes(&r.repository);
    let protocol = |detail: String| RegistryError::Protocol {
        registry: r.registry.clone(),
        what: format!("blob {digest} of {}", r.name()),
        detail,
    };
    let min_rate = inner.opts.min_rate;
    let mut retries = Retries::new(&inner.opts.retry, &conn, &what);
    loop {
        let attempt: Result<Attempt<_>, RegistryError> = async {
        // The whole transfer may take as long as the blob needs at the minimum rate.
        let deadline = inner.opts.request_timeout + Duration::from_secs(size / min_rate.max(1024));
        let req = Req::new(Method::GET, url.clone(), what.clone()).timeout(deadline);
        let (resp, _) = inner.send(&conn, &scopes, &r.repository, req, &c).await?;
        if resp.status() != StatusCode::OK {
            return Err(inner
                .status_error(&conn, &r.repository, &what, Kind::Blob(digest), resp)
                .await);
        }
        if let Some(l) = resp.content_length().filter(|l| *l != size) {
            return Err(protocol(format!(
                "the registry sends {l} bytes; its descriptor says {size}"
            )));
        }
        if cap.is_some_and(|max| size > max) {
            return Err(protocol(
                "it is too large to hold in memory; download it to a file instead".into(),
            ));
        }
        let (mut sink, extra) = open()?;
        let mut hasher = Hasher::like(digest);
        let mut got = 0u64;
        let mut stream = resp.bytes_stream();
        let mut failed = None;
        let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
        let too_slow = |window_bytes: u64, got: u64| {
            protocol(format!(
                "the registry sent {window_bytes} bytes in {}s, less than the minimum rate of {} KiB/s (--min-transfer-rate); {got} of {size} bytes arrived",
                RATE_WINDOW.as_secs(),
                min_rate / 1024
            ))
        };
        loop {
            let next = if min_rate == 0 {
                stream.next().await
            } else {
                let left = RATE_WINDOW.saturating_sub(window_start.elapsed());
                match tokio::time::timeout(left, stream.next()).await {
                    Ok(next) => next,
                    // A whole window without a chunk.
                    Err(_) => return Err(too_slow(window_bytes, got)),
                }
            };
            if min_rate > 0 && window_start.elapsed() >= RATE_WINDOW {
                if window_bytes < min_rate * RATE_WINDOW.as_secs() {
                    return Err(too_slow(window_bytes, got));
                }
                (window_start, window_bytes) = (Instant::now(), 0);
            }
            let Some(chunk) = next else { break };
            match chunk {
                Ok(b) => {
                    got += b.len() as u64;
                    window_bytes += b.len() as u64;
                    if got > size {
                        return Err(protocol(format!(
                            "the registry sent more than the {size} bytes its descriptor says"
                        )));
                    }
                    hasher.update(&b);
                    tokio::io::AsyncWriteExt::write_all(&mut sink, &b)
                        .await
                        .map_err(|e| RegistryError::io("cannot write", dest, e))?;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(error) = failed {
            return Ok(Attempt::Retry(Failure::Body { error, url: url.clone() }));
        }
        if got != size {
            return Err(protocol(format!(
                "the registry sent {got} bytes; its descriptor says {size}"
            )));
        }
        tokio::io::AsyncWriteExt::flush(&mut sink)
            .await
            .map_err(|e| RegistryError::io("cannot write", dest, e))?;
        let actual = hasher.finish();
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: r.registry.clone(),
                what: format!("blob {digest} of {}", r.name()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(Attempt::Done((sink, extra, got)))
        }
        .await;
        if let Some(done) = retries.after(attempt).await? {
            break Ok(done);
        }
    }
}

pub(crate) async fn blob_exists(inner: &Inner, r: &Reference, digest: &str) -> Result<bool, RegistryError> {
    check_digest(&r.registry, digest)?;
    let stats = Arc::new(Stats::default());
    let c = inner.counter(&stats);
    let conn = inner.conn(&r.registry, r.api_host());
    head_blob(inner, &conn, &pull_scopes(&r.repository), &r.repository, digest, &c).await
}

/// HEAD a blob: true on 200, false on 404.
pub(crate) async fn head_blob(
    inner: &Inner,
    conn: &Conn,
    scopes: &[String],
    repository: &str,
    digest: &str,
    c: &Counter,
) -> Result<bool, RegistryError> {
    let base = inner.base(conn, c).await?;
    let url = base
        .join(&format!("v2/{repository}/blobs/{digest}"))
        .map_err(|e| RegistryError::InvalidPush(format!("bad blob URL for {repository}: {e}")))?;
    let what = format!("HEAD blob {digest}");
    let (resp, _) = inner
        .send(conn, scopes, repository, Req::new(Method::HEAD, url, what.clone()), c)
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(inner.status_error(conn, repository, &what, Kind::Other, resp).await),
    }
}
