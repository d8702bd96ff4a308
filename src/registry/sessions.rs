//! Upload sessions opened ahead of a push. Every upload of new content costs a POST (which
//! opens the session) before the PUT that carries the bytes, and the POST needs no digest. So
//! when a build knows early that its push will upload new blobs (a layer it must compress anew,
//! into a repository that the record of earlier pushes shows holding the rest), it opens that
//! many sessions while the image is still being made, and the push's uploads go straight to
//! their PUT: one round trip less on the way to the manifest. Sessions the push does not use are
//! cancelled (DELETE) alongside the manifest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode, Url};

use super::auth::push_scopes;
use super::connection::{resolve_location, Conn, Inner};
use super::error::{Kind, RegistryError};
use super::known::KnownBlobs;
use super::send::Req;
use super::stats::{Counter, Stats};
use crate::oci::reference::Reference;

/// What a build knows of its push before the image is finished.
#[derive(Debug, Clone, Default)]
pub struct PushForecast {
    /// Digests of the layers it has already (taken from the layer cache).
    pub known_layers: Vec<String>,
    /// Layers it is compressing anew: new content.
    pub new_layers: usize,
    /// Repositories of the target's registry that the push may mount blobs from (the base's, the
    /// dependency cache's): the sessions' token must carry them too, as the push's will.
    pub mount_from: Vec<String>,
}

/// What a build prepared for its push to one repository: the record of the last push from here
/// (read once, for the forecast and for the push) and the upload sessions it opened.
pub(crate) struct PreparedPush {
    pub known: KnownBlobs,
    pub sessions: Option<OpenedSessions>,
}

impl PreparedPush {
    pub fn new(inner: &Arc<Inner>, target: &Reference, forecast: PushForecast) -> PreparedPush {
        let known = KnownBlobs::load(inner.opts.cache_dir.as_deref(), &target.registry, &target.repository);
        let count = wanted(&known, &forecast, inner.opts.parallelism);
        let sessions = (count > 0).then(|| {
            tracing::debug!(repository = %target.repository, count, "opening upload sessions ahead");
            OpenedSessions::open(inner.clone(), target, count, forecast.mount_from)
        });
        PreparedPush { known, sessions }
    }
}

/// What builds prepared for their pushes, by `registry/repository`, until each push takes its own.
#[derive(Default)]
pub(crate) struct PreparedPushes(Mutex<HashMap<String, PreparedPush>>);

impl PreparedPushes {
    /// Keeps what a build prepared for its push to `target`'s repository, for that push.
    pub fn keep(&self, target: &Reference, prepared: PreparedPush) {
        let key = format!("{}/{}", target.registry, target.repository);
        self.0.lock().unwrap().insert(key, prepared);
    }

    /// What a build prepared for this push to `target`'s repository, if anything (once).
    pub fn take(&self, target: &Reference) -> Option<PreparedPush> {
        let key = format!("{}/{}", target.registry, target.repository);
        self.0.lock().unwrap().remove(&key)
    }
}

/// How many uploads a push with this forecast will start, when the record of earlier pushes says
/// which blobs are there: none without a record (the push checks each blob first), else the
/// layers the record lacks plus the config, which changes with them.
fn wanted(known: &KnownBlobs, forecast: &PushForecast, parallelism: usize) -> usize {
    if !known.exists() {
        return 0;
    }
    let missing = forecast.new_layers + forecast.known_layers.iter().filter(|d| !known.contains(d)).count();
    if missing == 0 {
        0
    } else {
        (missing + 1).min(parallelism)
    }
}

/// The sessions opened for one repository. Their list stays locked by the task that opens them
/// until it is done, so that taking one waits for the opening.
pub(crate) struct OpenedSessions {
    stats: Arc<Stats>,
    urls: Arc<tokio::sync::Mutex<Vec<Url>>>,
}

impl OpenedSessions {
    /// Starts opening `count` sessions in `target`'s repository in the background.
    fn open(inner: Arc<Inner>, target: &Reference, count: usize, mount_from: Vec<String>) -> OpenedSessions {
        let stats = Arc::new(Stats::default());
        let c = inner.counter(&stats);
        let urls = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let mut opened = urls.clone().try_lock_owned().expect("a new lock is free");
        let (registry, host, repo) = (
            target.registry.clone(),
            target.api_host().to_string(),
            target.repository.clone(),
        );
        tokio::spawn(async move {
            let conn = inner.conn(&registry, &host);
            let scopes = push_scopes(&repo, &mount_from);
            let results = futures_util::future::join_all(
                (0..count).map(|_| start_upload(&inner, &conn, &scopes, &repo, "a blob to come", &c)),
            )
            .await;
            *opened = results
                .into_iter()
                .filter_map(|r| {
                    r.map_err(|e| tracing::debug!(repository = %repo, error = %e, "no upload session opened ahead"))
                        .ok()
                })
                .collect();
        });
        OpenedSessions { stats, urls }
    }

    /// One open session, once the opening is done; `None` when all are taken (or none opened).
    pub async fn take(&self) -> Option<Url> {
        self.urls.lock().await.pop()
    }

    /// The sessions nobody took.
    pub async fn rest(&self) -> Vec<Url> {
        std::mem::take(&mut *self.urls.lock().await)
    }

    /// Requests made opening them.
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }
}

/// Opens an upload session: POST → 202 (or 201) with a Location.
pub(crate) async fn start_upload(
    inner: &Inner,
    conn: &Conn,
    scopes: &[String],
    repo: &str,
    blob: &str,
    c: &Counter,
) -> Result<Url, RegistryError> {
    let base = inner.base(conn, c).await?;
    let url = base
        .join(&format!("v2/{repo}/blobs/uploads/"))
        .map_err(|e| RegistryError::InvalidPush(format!("bad URL for {repo}: {e}")))?;
    let what = format!("upload of {blob}");
    let req = Req::new(Method::POST, url, format!("POST upload for {blob}"))
        .header(CONTENT_LENGTH, "0")
        .body(Vec::new());
    let (resp, req_url) = inner.send(conn, scopes, repo, req, c).await?;
    if !(resp.status() == StatusCode::ACCEPTED || resp.status() == StatusCode::CREATED) {
        return Err(inner.status_error(conn, repo, &what, Kind::Other, resp).await);
    }
    let protocol_error = |detail: String| RegistryError::Protocol {
        registry: conn.registry.clone(),
        what: format!("starting the {what}"),
        detail,
    };
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| protocol_error("the answer has no Location header".into()))?;
    resolve_location(&req_url, loc).map_err(protocol_error)
}

/// Cancels an unused session (best effort: a registry drops stale sessions by itself).
pub(crate) async fn cancel(inner: &Inner, conn: &Conn, scopes: &[String], repo: &str, session: Url, c: &Counter) {
    let Ok(auth) = inner.authorization(conn, scopes, repo, c).await else {
        return;
    };
    let res = inner
        .send_once(conn, Method::DELETE, session, &[], auth.as_deref(), None, None, c)
        .await;
    if let Err(e) = res {
        tracing::debug!(repository = %repo, error = %e, "cannot cancel an unused upload session");
    }
}
