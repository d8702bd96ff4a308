//! Uploading one blob: a session (opened ahead, by a mount's 202, or by a fresh POST), then one
//! streamed PUT with `?digest=` from a file, memory, or another registry's GET. A failed attempt
//! starts over from a fresh POST (and GET), by the policy in `retry.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use super::auth::pull_scopes;
use super::connection::{Conn, Inner};
use super::error::{describe_error_body, describe_transport, error_codes, Kind, RegistryError};
use super::known::KnownBlobs;
use super::retry::{retry_after, retryable_status, upload_session_lost, Attempt, Failure, Retries};
use super::send::Req;
use super::sessions::{start_upload, OpenedSessions};
use super::stats::Counter;
use super::{BlobSource, ProgressFn, PushBlob, PushEvent};

/// Uploads get the request timeout plus the time the blob takes at the minimum rate.
fn upload_timeout(inner: &Inner, size: u64) -> Duration {
    inner.opts.request_timeout + Duration::from_secs(size / inner.opts.min_rate.max(1024))
}

/// What the steps of one push share (push.rs, and the uploads here): the target repository and
/// its connection, the token scopes, counters, progress, the record of the blobs it holds and
/// the sessions opened ahead.
pub(crate) struct Ctx<'a> {
    pub inner: &'a Inner,
    pub conn: Arc<Conn>,
    pub repo: String,
    pub scopes: Vec<String>,
    pub c: Counter,
    pub progress: Option<ProgressFn>,
    pub known: &'a KnownBlobs,
    /// Upload sessions opened while the image was being built.
    pub opened: Option<OpenedSessions>,
}

impl Ctx<'_> {
    pub fn emit(&self, e: PushEvent) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }

    pub fn url(&self, base: &Url, path: &str) -> Result<Url, RegistryError> {
        base.join(&format!("v2/{}/{path}", self.repo))
            .map_err(|e| RegistryError::InvalidPush(format!("bad URL for {}: {e}", self.repo)))
    }
}

/// Upload one blob: POST (unless `session` is given), then one streamed PUT with `?digest=`;
/// the whole step is retried from a fresh POST (and, for a registry source, a fresh GET).
pub(crate) async fn upload(ctx: &Ctx<'_>, blob: &PushBlob, mut session: Option<Url>) -> Result<(), RegistryError> {
    let inner = ctx.inner;
    let mut renewed = false;
    if session.is_none() {
        if let Some(opened) = &ctx.opened {
            session = opened.take().await;
        }
    }
    let what = format!("uploading blob {} to {}", blob.digest, ctx.repo);
    let mut retries = Retries::new(&inner.opts.retry, &ctx.conn, &what);
    loop {
        let attempt: Result<Attempt<_>, RegistryError> = async {
            let location = match session.take() {
                Some(u) => u,
                None => {
                    let blob_name = format!("blob {}", blob.digest);
                    start_upload(inner, &ctx.conn, &ctx.scopes, &ctx.repo, &blob_name, &ctx.c).await?
                }
            };
            upload_attempt(ctx, blob, location, &mut renewed).await
        }
        .await;
        if let Some(done) = retries.after(attempt).await? {
            break Ok(done);
        }
    }
}

/// One PUT of a blob to an open session; a 401 renews the token once (`renewed`).
async fn upload_attempt(
    ctx: &Ctx<'_>,
    blob: &PushBlob,
    location: Url,
    renewed: &mut bool,
) -> Result<Attempt<()>, RegistryError> {
    let inner = ctx.inner;
    let mut put_url = location;
    put_url.query_pairs_mut().append_pair("digest", &blob.digest);

    let sent = Arc::new(AtomicU64::new(0));
    let body = body_for(ctx, blob, sent.clone()).await?;
    let auth = inner.authorization(&ctx.conn, &ctx.scopes, &ctx.repo, &ctx.c).await?;
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (CONTENT_LENGTH, HeaderValue::from(blob.size)),
    ];
    let res = inner
        .send_once(
            &ctx.conn,
            Method::PUT,
            put_url.clone(),
            &headers,
            auth.as_deref(),
            Some(body),
            Some(upload_timeout(inner, blob.size)),
            &ctx.c,
        )
        .await;
    let resp = match res {
        Ok((r, _)) => r,
        Err(error) => {
            let last = format!(
                "{} after {} of {} bytes",
                describe_transport(&error),
                sent.load(Ordering::Relaxed),
                blob.size
            );
            return Ok(Attempt::Retry(Failure::Upload {
                error,
                url: put_url,
                last,
            }));
        }
    };
    let status = resp.status();
    if status == StatusCode::CREATED || status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
        if let Some(got) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if got != blob.digest {
                return Err(RegistryError::DigestMismatch {
                    registry: ctx.conn.registry.clone(),
                    what: format!("blob uploaded to {}", ctx.repo),
                    expected: blob.digest.clone(),
                    actual: got.to_string(),
                });
            }
        }
        return Ok(Attempt::Done(()));
    }
    let what = format!("blob {}", blob.digest);
    if status == StatusCode::UNAUTHORIZED {
        if !*renewed && inner.renew(&ctx.conn, auth.as_deref(), resp.headers()).await {
            *renewed = true;
            return Ok(Attempt::Again);
        }
        return Err(inner
            .status_error_parts(&ctx.conn, &ctx.repo, &what, Kind::Other, 401, &[])
            .await);
    }
    let ra = retry_after(resp.headers());
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    if retryable_status(status) || upload_session_lost(status, &error_codes(&body)) {
        return Ok(Attempt::Retry(Failure::Status {
            last: describe_error_body(status.as_u16(), &body),
            retry_after: ra,
        }));
    }
    Err(inner
        .status_error_parts(&ctx.conn, &ctx.repo, &what, Kind::Other, status.as_u16(), &body)
        .await)
}

/// The PUT body for a blob, counting bytes as they go out.
async fn body_for(ctx: &Ctx<'_>, blob: &PushBlob, sent: Arc<AtomicU64>) -> Result<reqwest::Body, RegistryError> {
    let counter = ctx.c.clone();
    let progress = ctx.progress.clone();
    let digest = blob.digest.clone();
    let size = blob.size;
    let count = move |n: usize| {
        let total = sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        counter.uploaded(n as u64);
        if let Some(p) = &progress {
            p(&PushEvent::BlobProgress {
                digest: digest.clone(),
                sent: total,
                size,
            });
        }
    };
    match &blob.source {
        BlobSource::Bytes(bytes) => {
            if bytes.len() as u64 != blob.size {
                return Err(RegistryError::InvalidPush(format!(
                    "blob {} is {} bytes in memory but its size is given as {}",
                    blob.digest,
                    bytes.len(),
                    blob.size
                )));
            }
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
            let stream = futures_util::stream::iter(chunks).inspect_ok(move |c| count(c.len()));
            Ok(reqwest::Body::wrap_stream(stream))
        }
        BlobSource::File(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| RegistryError::io("cannot open blob file", path, e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| RegistryError::io("cannot read blob file", path, e))?
                .len();
            if len != blob.size {
                return Err(RegistryError::InvalidPush(format!(
                    "blob {} is {len} bytes in {} but its size is given as {}",
                    blob.digest,
                    path.display(),
                    blob.size
                )));
            }
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect_ok(move |c| count(c.len()));
            Ok(reqwest::Body::wrap_stream(stream))
        }
        BlobSource::Registry(src) => {
            let inner = ctx.inner;
            let sconn = inner.conn(&src.registry, src.api_host());
            let sbase = inner.base(&sconn, &ctx.c).await?;
            let url = sbase
                .join(&format!("v2/{}/blobs/{}", src.repository, blob.digest))
                .map_err(|e| RegistryError::InvalidPush(format!("bad blob URL for {src}: {e}")))?;
            let what = format!("GET blob {}", blob.digest);
            // Same registry: the push token also carries pull for the source repository.
            let scopes = if sconn.registry == ctx.conn.registry {
                ctx.scopes.clone()
            } else {
                pull_scopes(&src.repository)
            };
            let req = Req::new(Method::GET, url, what.clone()).timeout(upload_timeout(inner, blob.size));
            let (resp, _) = inner.send(&sconn, &scopes, &src.repository, req, &ctx.c).await?;
            if resp.status() != StatusCode::OK {
                return Err(inner
                    .status_error(&sconn, &src.repository, &what, Kind::Blob(&blob.digest), resp)
                    .await);
            }
            let stream = resp.bytes_stream().inspect_ok(move |c| count(c.len()));
            Ok(reqwest::Body::wrap_stream(stream))
        }
    }
}
