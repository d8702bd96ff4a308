//! Finding how to talk to a registry: `GET /v2/` over HTTPS (plain HTTP only where allowed,
//! loopback first), which says the auth scheme too; or, for a registry recorded open
//! (`known.rs`), no probe at all until the record proves wrong.

use reqwest::{StatusCode, Url};

use super::auth::{self, AuthScheme};
use super::connection::{is_loopback, Conn, ConnState, Inner};
use super::error::{describe_transport, is_tls_error, RegistryError};
use super::known;
use super::retry::{retry_after, retryable_status, Attempt, Failure, Retries};
use super::stats::Counter;

impl Inner {
    /// `scheme://host/` of the registry, detecting the scheme and auth scheme on first use.
    pub async fn base(&self, conn: &Conn, c: &Counter) -> Result<Url, RegistryError> {
        let mut st = conn.state.lock().await;
        if !st.pinged && !self.adopt_record(conn, &mut st) {
            self.ping(conn, &mut st, c).await?;
        }
        Ok(st.base.clone().expect("pinged"))
    }

    /// The schemes to probe, in order: loopback registries almost always speak plain HTTP, so
    /// that goes first and saves a TLS handshake that would fail. Other registries allowed plain
    /// HTTP try HTTPS first.
    fn schemes(conn: &Conn) -> &'static [&'static str] {
        match (conn.plain_allowed, is_loopback(&conn.registry)) {
            (true, true) => &["http", "https"],
            (true, false) => &["https", "http"],
            (false, _) => &["https"],
        }
    }

    /// Skips the probe of a registry recorded as open (no credentials asked) over the scheme a
    /// probe would try first; anything else is probed.
    pub fn adopt_record(&self, conn: &Conn, st: &mut ConnState) -> bool {
        let Some(base) = known::open_registry(self.opts.cache_dir.as_deref(), &conn.host) else {
            return false;
        };
        let expected = format!("{}://{}/", Self::schemes(conn)[0], conn.host);
        if base.as_str() != expected {
            return false;
        }
        tracing::debug!(registry = %conn.registry, base = %base, "registry known to be open: no probe");
        *conn.base_url.write().unwrap() = Some(base.clone());
        st.base = Some(base);
        st.scheme = Some(AuthScheme::Anonymous);
        st.pinged = true;
        st.from_record = true;
        true
    }

    /// The record of an open registry proved wrong: forget it, and probe on the next request.
    pub async fn drop_record(&self, conn: &Conn) {
        let mut st = conn.state.lock().await;
        if st.from_record {
            tracing::debug!(registry = %conn.registry, "the registry changed since it was recorded open; probing it");
            known::forget_open_registry(self.opts.cache_dir.as_deref(), &conn.host);
            st.from_record = false;
            st.pinged = false;
            st.base = None;
            st.scheme = None;
            *conn.base_url.write().unwrap() = None;
        }
    }

    /// `GET /v2/`: which scheme works (HTTPS; plain HTTP only where allowed) and which auth.
    pub async fn ping(&self, conn: &Conn, st: &mut ConnState, c: &Counter) -> Result<(), RegistryError> {
        let schemes = Self::schemes(conn);
        let mut retries = Retries::new(&self.opts.retry, conn, "GET /v2/");
        loop {
            let attempt: Result<Attempt<_>, RegistryError> = async {
                let mut last: Option<Failure> = None;
                let mut tls_failure: Option<(String, String)> = None;
                // A TLS port answered our plain HTTP: a TLS failure after that is the answer.
                let mut plain_refused = false;
                for scheme in schemes {
                    let url = format!("{scheme}://{}/v2/", conn.host);
                    let Ok(parsed) = Url::parse(&url) else {
                        return Err(RegistryError::InvalidOptions(format!(
                            "{} is not a usable registry address",
                            conn.host
                        )));
                    };
                    tracing::debug!(method = "GET", url = %parsed, "registry request");
                    let res = conn
                        .http
                        .get(parsed.clone())
                        .timeout(self.opts.request_timeout)
                        .send()
                        .await;
                    // A failed HTTPS probe of a registry that then answers plain HTTP is no request.
                    if res.is_ok() || Some(scheme) == schemes.last() {
                        c.request();
                    }
                    let resp = match res {
                        Ok(resp) => resp,
                        Err(e) => {
                            tracing::debug!(url = %parsed, error = %describe_transport(&e), "registry request failed");
                            if *scheme == "https" && is_tls_error(&e) {
                                tls_failure = Some((url.clone(), describe_transport(&e)));
                                if !conn.plain_allowed || plain_refused {
                                    let (address, detail) = tls_failure.unwrap();
                                    return Err(RegistryError::Tls {
                                        registry: conn.registry.clone(),
                                        address,
                                        detail,
                                    });
                                }
                            }
                            last = Some(Failure::Unanswered {
                                address: url,
                                detail: describe_transport(&e),
                            });
                            continue;
                        }
                    };
                    let status = resp.status();
                    tracing::debug!(url = %parsed, status = status.as_u16(), "registry response");
                    // Plain HTTP sent to a TLS port: Go's servers answer 400. Try HTTPS.
                    if *scheme == "http" && status == StatusCode::BAD_REQUEST && Some(scheme) != schemes.last() {
                        plain_refused = true;
                        continue;
                    }
                    if *scheme == "http" && status == StatusCode::BAD_REQUEST {
                        if let Some((addr, detail)) = tls_failure.take() {
                            // An HTTPS server that we could not verify.
                            return Err(RegistryError::Tls {
                                registry: conn.registry.clone(),
                                address: addr,
                                detail,
                            });
                        }
                    }
                    if retryable_status(status) {
                        last = Some(Failure::Status {
                            last: format!("HTTP {}", status),
                            retry_after: retry_after(resp.headers()),
                        });
                        break;
                    }
                    self.probed(conn, st, scheme, &resp)?;
                    return Ok(Attempt::Done(()));
                }
                Ok(Attempt::Retry(last.unwrap_or(Failure::Unanswered {
                    address: String::new(),
                    detail: String::new(),
                })))
            }
            .await;
            if let Some(done) = retries.after(attempt).await? {
                break Ok(done);
            }
        }
    }

    /// What a probe's answer over `scheme` says: the auth scheme, and the base URL (recorded
    /// when the registry asked for no credentials).
    fn probed(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        scheme: &str,
        resp: &reqwest::Response,
    ) -> Result<(), RegistryError> {
        let scheme_found = if resp.status() == StatusCode::UNAUTHORIZED {
            match AuthScheme::from_challenges(&auth::challenges(resp.headers())) {
                Some(s) => s,
                None => {
                    return Err(RegistryError::Protocol {
                        registry: conn.registry.clone(),
                        what: "authentication challenge".into(),
                        detail: "GET /v2/ answered 401 without a Basic or Bearer challenge fnbuild understands".into(),
                    })
                }
            }
        } else {
            AuthScheme::Anonymous
        };
        let cache_dir = self.opts.cache_dir.as_deref();
        let base = Url::parse(&format!("{scheme}://{}/", conn.host)).expect("valid");
        if scheme_found == AuthScheme::Anonymous {
            known::remember_open_registry(cache_dir, &conn.host, &base);
        } else {
            known::forget_open_registry(cache_dir, &conn.host);
        }
        st.scheme = Some(scheme_found);
        *conn.base_url.write().unwrap() = Some(base.clone());
        st.base = Some(base);
        st.pinged = true;
        Ok(())
    }
}
