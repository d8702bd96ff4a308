//! Sending requests to a registry: [`Req`] (a request that can be sent again), one hop-by-hop
//! send that follows redirects and gives `Authorization` only to the registry's own origin,
//! and [`Inner::send`], which authenticates (renewing once on 401) and retries by the one
//! policy in `retry.rs`; and turning a refusal into the error that says what to do.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};

use super::connection::{read_capped, redirect_target, Conn, Inner, ERROR_BODY_CAP};
use super::error::{describe_error_body, status_error, Asked, Kind, RegistryError};
use super::retry::{retry_after, retryable_status, Attempt, Failure, Retries};
use super::stats::Counter;

/// A request that can be sent again (its body is small and kept in memory).
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(reqwest::header::HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
    /// What this request does, for error messages ("HEAD blob sha256:…").
    pub what: String,
    /// Total time allowed, body included (default: the options' request timeout).
    pub timeout: Option<Duration>,
}

impl Req {
    pub fn new(method: Method, url: Url, what: impl Into<String>) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: None,
            what: what.into(),
            timeout: None,
        }
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

impl Inner {
    /// Send one request (no retries). GET and HEAD follow redirects. `Authorization` goes only
    /// to the registry's own origin, never to a redirect target or upload URL on another host.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_once(
        &self,
        conn: &Conn,
        method: Method,
        url: Url,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        auth: Option<&str>,
        body: Option<reqwest::Body>,
        timeout: Option<Duration>,
        c: &Counter,
    ) -> Result<(reqwest::Response, Url), reqwest::Error> {
        const MAX_REDIRECTS: usize = 10;
        let follow = method == Method::GET || method == Method::HEAD;
        let mut url = url;
        let mut body = body;
        for hop in 0..=MAX_REDIRECTS {
            let on_registry = conn.on_registry(&url);
            let http = if on_registry { &conn.http } else { self.client_for(&url) };
            let mut rb = http.request(method.clone(), url.clone());
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            if let (Some(a), true) = (auth, on_registry) {
                rb = rb.header(AUTHORIZATION, a);
            }
            if let Some(b) = body.take() {
                rb = rb.body(b);
            }
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            c.request();
            tracing::debug!(method = %method, url = %url, "registry request");
            let resp = rb.send().await?;
            tracing::debug!(method = %method, url = %url, status = resp.status().as_u16(), "registry response");
            if follow && hop < MAX_REDIRECTS {
                if let Some(next) = redirect_target(self, &url, &resp) {
                    url = next;
                    continue;
                }
            }
            return Ok((resp, url));
        }
        unreachable!("the loop returns on its last hop")
    }

    /// Send a request with authentication (renewing once on 401) and retries.
    /// Non-success statuses other than retryable ones are returned to the caller.
    pub async fn send(
        &self,
        conn: &Conn,
        scopes: &[String],
        repository: &str,
        mut req: Req,
        c: &Counter,
    ) -> Result<(reqwest::Response, Url), RegistryError> {
        let mut renewed = false;
        let what = req.what.clone();
        let mut retries = Retries::new(&self.opts.retry, conn, &what);
        loop {
            let attempt: Result<Attempt<_>, RegistryError> = async {
                let auth = self.authorization(conn, scopes, repository, c).await?;
                let from_record = conn.state.lock().await.from_record;
                conn.follow_base_scheme(&mut req.url);
                let body = req.body.clone().map(reqwest::Body::from);
                let res = self
                    .send_once(
                        conn,
                        req.method.clone(),
                        req.url.clone(),
                        &req.headers,
                        auth.as_deref(),
                        body,
                        Some(req.timeout.unwrap_or(self.opts.request_timeout)),
                        c,
                    )
                    .await;
                // A registry recorded open that now fails to answer, or answers plain HTTP with 400
                // (a TLS port): probe it afresh, which finds its scheme (and reports it unreachable
                // after the usual retries), and send again on the scheme found.
                let stale = match &res {
                    Err(_) => from_record,
                    Ok((resp, _)) => {
                        from_record && resp.status() == StatusCode::BAD_REQUEST && req.url.scheme() == "http"
                    }
                };
                if stale {
                    self.drop_record(conn).await;
                    return Ok(Attempt::Again);
                }
                let (resp, url) = match res {
                    Ok(r) => r,
                    Err(error) => {
                        return Ok(Attempt::Retry(Failure::Connection {
                            error,
                            url: req.url.clone(),
                        }))
                    }
                };
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED
                    && !renewed
                    && self.renew(conn, auth.as_deref(), resp.headers()).await
                {
                    renewed = true;
                    return Ok(Attempt::Again);
                }
                if retryable_status(status) {
                    let ra = retry_after(resp.headers());
                    let body = read_capped(resp, ERROR_BODY_CAP).await.unwrap_or_default();
                    let mut last = describe_error_body(status.as_u16(), &body);
                    if let Some(ra) = ra {
                        last.push_str(&format!(", Retry-After {}s", ra.as_secs()));
                    }
                    return Ok(Attempt::Retry(Failure::Status { last, retry_after: ra }));
                }
                Ok(Attempt::Done((resp, url)))
            }
            .await;
            if let Some(done) = retries.after(attempt).await? {
                break Ok(done);
            }
        }
    }

    /// Turn a non-success response into the error that says what to do.
    pub async fn status_error(
        &self,
        conn: &Conn,
        repository: &str,
        what: &str,
        kind: Kind<'_>,
        resp: reqwest::Response,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let body = read_capped(resp, ERROR_BODY_CAP).await.unwrap_or_default();
        self.status_error_parts(conn, repository, what, kind, status, &body)
            .await
    }

    /// [`Inner::status_error`] for an answer already read.
    pub async fn status_error_parts(
        &self,
        conn: &Conn,
        repository: &str,
        what: &str,
        kind: Kind<'_>,
        status: u16,
        body: &[u8],
    ) -> RegistryError {
        let detail = conn.redact(&describe_error_body(status, body));
        let source = if status == 401 {
            conn.state.lock().await.credential.clone().flatten().map(|(_, s)| s)
        } else {
            None
        };
        let asked = Asked {
            registry: &conn.registry,
            repository,
            what,
        };
        status_error(&asked, kind, status, body, detail, source.as_deref(), || {
            self.creds.describe()
        })
    }
}
