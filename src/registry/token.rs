//! Authentication per request: the credential for a registry (looked up once, its secrets
//! registered for redaction), the `Authorization` value its auth scheme asks for (Basic, or a
//! Bearer token fetched for the request's scopes and kept until it expires), and renewal after
//! a 401.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{StatusCode, Url};

use super::auth::{self, AuthScheme, Credential};
use super::connection::{read_capped, Conn, ConnState, Inner, Token};
use super::error::{auth_error, describe_error_body, error_codes, Asked, RegistryError};
use super::known;
use super::retry::{retry_after, retryable_status, Attempt, Failure, Retries};
use super::stats::Counter;

/// The most of a token response that is read.
const TOKEN_BODY_CAP: usize = 1 << 20;

impl Inner {
    async fn credential(&self, conn: &Conn, st: &mut ConnState) -> Result<Option<(Credential, String)>, RegistryError> {
        if st.credential.is_none() {
            let found = self.creds.lookup(&conn.registry)?;
            if let Some((c, _)) = &found {
                conn.secrets.lock().unwrap().extend(c.secrets());
                // Known to the whole process: logs, errors and the layer scan.
                for s in c.secrets() {
                    crate::secrets::register(&s);
                }
                if let Some(b64) = c.basic_header().strip_prefix("Basic ") {
                    crate::secrets::register(b64);
                }
            }
            st.credential = Some(found);
        }
        Ok(st.credential.clone().unwrap())
    }

    /// The `Authorization` value for a request needing `scopes` (fetching a token if needed).
    pub async fn authorization(
        &self,
        conn: &Conn,
        scopes: &[String],
        repository: &str,
        c: &Counter,
    ) -> Result<Option<String>, RegistryError> {
        let mut st = conn.state.lock().await;
        if !st.pinged && !self.adopt_record(conn, &mut st) {
            self.ping(conn, &mut st, c).await?;
        }
        match st.scheme.clone().unwrap_or(AuthScheme::Anonymous) {
            AuthScheme::Anonymous => Ok(None),
            AuthScheme::Basic => Ok(self.credential(conn, &mut st).await?.map(|(c, _)| c.basic_header())),
            AuthScheme::Bearer { realm, service } => {
                let need = auth::scope_atoms(scopes);
                let now = Instant::now();
                st.tokens.retain(|t| t.expires > now);
                if let Some(t) = st.tokens.iter().find(|t| need.is_subset(&t.atoms)) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let cred = self.credential(conn, &mut st).await?;
                let token = self
                    .fetch_token(conn, &realm, service.as_deref(), scopes, cred.as_ref(), repository, c)
                    .await?;
                let value = format!("Bearer {}", token.value);
                conn.secrets.lock().unwrap().push(token.value.clone());
                crate::secrets::register(&token.value);
                st.tokens.push(token);
                Ok(Some(value))
            }
        }
    }

    /// After a 401: forget the token that was sent and learn the challenge again. Returns
    /// whether another attempt can succeed (a bearer token to renew, or a new auth scheme);
    /// refused Basic credentials would only be refused again.
    pub async fn renew(&self, conn: &Conn, sent: Option<&str>, headers: &HeaderMap) -> bool {
        let mut st = conn.state.lock().await;
        let before = st.scheme.clone();
        if let Some(sent) = sent.and_then(|s| s.strip_prefix("Bearer ")) {
            st.tokens.retain(|t| t.value != sent);
        }
        if let Some(s) = AuthScheme::from_challenges(&auth::challenges(headers)) {
            if st.from_record && s != AuthScheme::Anonymous {
                // Recorded open, now asking for credentials.
                known::forget_open_registry(self.opts.cache_dir.as_deref(), &conn.host);
                st.from_record = false;
            }
            st.scheme = Some(s);
        }
        // A request sent without credentials to a registry now known to want Basic ones (learnt
        // from this answer, or meanwhile from a parallel request's) is worth sending again.
        let basic_unsent = sent.is_none() && st.scheme == Some(AuthScheme::Basic);
        matches!(st.scheme, Some(AuthScheme::Bearer { .. })) || st.scheme != before || basic_unsent
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_token(
        &self,
        conn: &Conn,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&(Credential, String)>,
        repository: &str,
        c: &Counter,
    ) -> Result<Token, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: conn.registry.clone(),
            what: "token realm".into(),
            detail: format!("the realm {realm:?} is not a URL: {e}"),
        })?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.plain_allowed_url(&url)) {
            return Err(RegistryError::Protocol {
                registry: conn.registry.clone(),
                what: "token realm".into(),
                detail: format!(
                    "the token service {} is not HTTPS; fnbuild sends credentials over plain HTTP only to loopback or --insecure-registry hosts",
                    url.origin().ascii_serialization()
                ),
            });
        }
        let http = self.client_for(&url).clone();
        let identity = matches!(cred, Some((Credential::IdentityToken(_), _)));
        if !identity {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut retries = Retries::new(&self.opts.retry, conn, "getting an access token");
        let (status, body) = loop {
            let attempt: Result<Attempt<_>, RegistryError> = async {
                let mut rb = if let (true, Some((Credential::IdentityToken(t), _))) = (identity, cred) {
                    let scope = scopes.join(" ");
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("client_id", "fnbuild"),
                        ("refresh_token", t.as_str()),
                        ("scope", scope.as_str()),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    // Form building borrows `scope`; send right away.
                    http.post(url.clone()).form(&form)
                } else {
                    let mut rb = http.get(url.clone());
                    if let Some((cr, _)) = cred {
                        rb = rb.header(AUTHORIZATION, cr.basic_header());
                    }
                    rb
                };
                rb = rb.timeout(self.opts.request_timeout);
                c.request();
                tracing::debug!(method = if identity { "POST" } else { "GET" }, url = %url, "token request");
                let resp = match rb.send().await {
                    Ok(r) => r,
                    Err(error) => {
                        return Ok(Attempt::Retry(Failure::Connection {
                            error,
                            url: url.clone(),
                        }))
                    }
                };
                let status = resp.status();
                let ra = retry_after(resp.headers());
                let body = match read_capped(resp, TOKEN_BODY_CAP).await {
                    Ok(b) => b,
                    Err(error) => {
                        return Ok(Attempt::Retry(Failure::Body {
                            error,
                            url: url.clone(),
                        }))
                    }
                };
                tracing::debug!(url = %url, status = status.as_u16(), "token response");
                if retryable_status(status) {
                    return Ok(Attempt::Retry(Failure::Status {
                        last: describe_error_body(status.as_u16(), &body),
                        retry_after: ra,
                    }));
                }
                Ok(Attempt::Done((status, body)))
            }
            .await;
            if let Some(done) = retries.after(attempt).await? {
                break done;
            }
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = conn.redact(&describe_error_body(status.as_u16(), &body));
            let asked = Asked {
                registry: &conn.registry,
                repository,
                what: "an access token",
            };
            return Err(auth_error(
                &asked,
                cred.map(|(_, source)| source.as_str()),
                format!("the token service answered {detail}"),
                || self.creds.describe(),
            ));
        }
        if !status.is_success() {
            return Err(RegistryError::Refused {
                registry: conn.registry.clone(),
                repository: repository.to_string(),
                what: "an access token".into(),
                detail: conn.redact(&describe_error_body(status.as_u16(), &body)),
                codes: error_codes(&body),
            });
        }
        let parsed: auth::TokenResponse = serde_json::from_slice(&body).map_err(|_| RegistryError::Protocol {
            registry: conn.registry.clone(),
            what: "access token".into(),
            detail: "the token service's answer is not JSON".into(),
        })?;
        let Some(value) = parsed.bearer() else {
            return Err(RegistryError::Protocol {
                registry: conn.registry.clone(),
                what: "access token".into(),
                detail: "the token service's answer has no token".into(),
            });
        };
        // Renew a little early; tokens valid for less than 60 s are treated as 60 s (spec).
        let life = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(60));
        Ok(Token {
            atoms: auth::scope_atoms(scopes),
            value: value.to_string(),
            expires: Instant::now() + life.saturating_sub(Duration::from_secs(10)),
        })
    }
}
