//! HTTP plumbing shared by pull and push: one reqwest client (one connection pool) per
//! registry, scheme detection (`GET /v2/`), authentication (anonymous, Basic, Bearer token),
//! retries with backoff, redirects that never carry `Authorization` to another host, and
//! request counting. (Over 600 lines, tests from line ~1190: it does several jobs that the house
//! issue, point 4, splits into send + retry, ping, token and errors.)

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use super::auth::{self, AuthScheme, Credential, CredentialSource};
use super::error::{describe_error_body, describe_transport, is_tls_error, one_line, ErrorCode, RegistryError};
use super::sessions::PreparedPush;
use super::{known, RegistryOptions};
use crate::reference::Reference;

/// Counters for one operation (and, separately, for the whole client).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

impl Stats {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn uploaded(&self, n: u64) {
        self.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes_uploaded.load(Ordering::Relaxed)
    }
}

/// Counts into an operation's stats and the client's totals at once.
#[derive(Clone)]
pub(crate) struct Counter {
    pub op: Arc<Stats>,
    pub total: Arc<Stats>,
}

impl Counter {
    pub fn request(&self) {
        self.op.request();
        self.total.request();
    }
    pub fn uploaded(&self, n: u64) {
        self.op.uploaded(n);
        self.total.uploaded(n);
    }
}

/// The most of an error body that is read (what a message can use; a hostile registry may send
/// an endless one).
const ERROR_BODY_CAP: usize = 64 * 1024;
/// The most of a token response that is read.
const TOKEN_BODY_CAP: usize = 1 << 20;

/// A response body, read up to `cap` bytes whatever its headers say; the rest is left unread.
async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == cap {
            break;
        }
    }
    Ok(body)
}

/// Retry budget: attempts and total time, with exponential backoff and jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per step, the first included.
    pub max_attempts: u32,
    /// Give up on a step once this much time has passed since its first attempt.
    pub max_elapsed: Duration,
    /// Delay before the second attempt; doubles each time (with jitter).
    pub base_delay: Duration,
    /// Largest delay between attempts (a longer `Retry-After` is honoured within `max_elapsed`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// One step's progress through its retry budget.
pub(crate) struct Backoff<'a> {
    policy: &'a RetryPolicy,
    start: Instant,
    attempts: u32,
}

impl<'a> Backoff<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Backoff {
            policy,
            start: Instant::now(),
            attempts: 0,
        }
    }

    /// Record an attempt about to be made.
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The delay before the next attempt, or `None` when the budget is spent.
    pub fn next_delay(&self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1u32 << (self.attempts.saturating_sub(1)).min(16))
            .min(self.policy.max_delay);
        // Full jitter in [exp/2, exp].
        let jittered = exp / 2 + exp.mul_f64(jitter() / 2.0);
        let delay = match retry_after {
            Some(ra) => ra.max(jittered),
            None => jittered,
        };
        if self.start.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        Some(delay)
    }
}

/// A number in [0, 1) from a small xorshift generator (jitter needs no cryptographic quality).
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (HTTP dates are ignored: the backoff applies then).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Statuses worth another attempt.
pub(crate) fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Resolve a `Location` header (absolute, scheme-relative, absolute-path or relative) against
/// the URL of the request that returned it, keeping the Location's query string.
pub fn resolve_location(request_url: &Url, location: &str) -> Result<Url, String> {
    request_url
        .join(location.trim())
        .map_err(|e| format!("invalid Location header {:?}: {e}", one_line(location, 120)))
}

/// Same host and written port, whatever the scheme.
fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str() == b.host_str() && a.port() == b.port()
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether `registry` (host[:port]) is a loopback address: 127.0.0.0/8, localhost, [::1].
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The host part of `host[:port]` (IPv6 in brackets kept).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(i) => &registry[..=i],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

/// Whether `registry` is named in the insecure list (`HOST:PORT` exactly, or `HOST` for any port).
pub(crate) fn is_listed_insecure(list: &[String], registry: &str) -> bool {
    let host = host_of(registry);
    list.iter().any(|e| {
        let e = e
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        e.eq_ignore_ascii_case(registry) || e.eq_ignore_ascii_case(host)
    })
}

struct Token {
    atoms: BTreeSet<String>,
    value: String,
    expires: Instant,
}

#[derive(Default)]
struct ConnState {
    pinged: bool,
    base: Option<Url>,
    scheme: Option<AuthScheme>,
    /// `None` = not looked up yet.
    credential: Option<Option<(Credential, String)>>,
    tokens: Vec<Token>,
    /// Base and scheme taken from the record of open registries, not from a probe this run.
    from_record: bool,
}

/// One registry: its client (connection pool), detected scheme and auth state.
pub(crate) struct Conn {
    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The host serving its API (`registry-1.docker.io`).
    pub host: String,
    plain_allowed: bool,
    http: reqwest::Client,
    state: tokio::sync::Mutex<ConnState>,
    secrets: Mutex<Vec<String>>,
    /// `scheme://host/` once known: the only origin that gets `Authorization`.
    base_url: std::sync::RwLock<Option<Url>>,
}

impl Conn {
    /// Replace any secret this connection knows (in any of its encodings, and any
    /// `Basic` / `Bearer` value) with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.lock().unwrap().iter() {
            if s.len() >= 3 {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        crate::secrets::redact(&out).replace(crate::secrets::REDACTED, "<redacted>")
    }
}

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

/// The shared inside of a [`super::Client`].
pub(crate) struct Inner {
    pub opts: RegistryOptions,
    /// Trusts only `--ca-cert` bundles, not the system's CA store: for loopback registries,
    /// which speak plain HTTP or use a private CA. Built at once (it checks the CA files).
    local: reqwest::Client,
    /// Built on first use, as each reads the system's CA store (milliseconds a build need not pay
    /// when it only talks to a loopback registry): verified TLS, and `--insecure-registry` hosts.
    secure: std::sync::OnceLock<reqwest::Client>,
    insecure: std::sync::OnceLock<reqwest::Client>,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    creds: CredentialSource,
    pub totals: Arc<Stats>,
    /// What builds prepared for their pushes, by `registry/repository`.
    prepared: Mutex<HashMap<String, PreparedPush>>,
}

fn build_http(
    opts: &RegistryOptions,
    accept_invalid: bool,
    system_roots: bool,
) -> Result<reqwest::Client, RegistryError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(system_roots)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("fnbuild/", env!("CARGO_PKG_VERSION")));
    for path in &opts.ca_certs {
        let pem = std::fs::read(path).map_err(|e| RegistryError::io("cannot read CA certificate", path, e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            RegistryError::InvalidOptions(format!(
                "{} is not a PEM certificate bundle: {e}; pass a file with -----BEGIN CERTIFICATE----- blocks",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(RegistryError::InvalidOptions(format!(
                "{} contains no PEM certificate; pass a file with -----BEGIN CERTIFICATE----- blocks",
                path.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if accept_invalid {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| RegistryError::InvalidOptions(format!("cannot set up the HTTP client: {e}")))
}

/// Where a response's status leads when it is not a success.
pub(crate) enum Kind<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Other,
}

impl Inner {
    pub fn new(opts: RegistryOptions) -> Result<Inner, RegistryError> {
        let local = build_http(&opts, false, false)?;
        let creds = CredentialSource::from_env(opts.registry_config.as_deref());
        if let (Some(p), true) = (&creds.path, creds.explicit) {
            if !p.is_file() {
                return Err(RegistryError::InvalidOptions(format!(
                    "the registry config {} does not exist; pass a docker config.json with --registry-config",
                    p.display()
                )));
            }
        }
        Ok(Inner {
            opts,
            local,
            secure: std::sync::OnceLock::new(),
            insecure: std::sync::OnceLock::new(),
            conns: Mutex::new(HashMap::new()),
            creds,
            totals: Arc::new(Stats::default()),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    // The options were checked when the local client was built; should a later build still
    // fail, the local client (which verifies certificates) is the safe fallback.
    fn secure(&self) -> &reqwest::Client {
        self.secure
            .get_or_init(|| build_http(&self.opts, false, true).unwrap_or_else(|_| self.local.clone()))
    }

    fn insecure(&self) -> &reqwest::Client {
        self.insecure
            .get_or_init(|| build_http(&self.opts, true, true).unwrap_or_else(|_| self.local.clone()))
    }

    pub fn counter(&self, op: &Arc<Stats>) -> Counter {
        Counter {
            op: op.clone(),
            total: self.totals.clone(),
        }
    }

    /// Keeps what a build prepared for its push to `target`'s repository, for that push.
    pub fn keep_prepared(&self, target: &Reference, prepared: PreparedPush) {
        let key = format!("{}/{}", target.registry, target.repository);
        self.prepared.lock().unwrap().insert(key, prepared);
    }

    /// What a build prepared for this push to `target`'s repository, if anything (once).
    pub fn take_prepared(&self, target: &Reference) -> Option<PreparedPush> {
        let key = format!("{}/{}", target.registry, target.repository);
        self.prepared.lock().unwrap().remove(&key)
    }

    /// The connection for a registry (created on first use).
    pub fn conn(&self, registry: &str, api_host: &str) -> Arc<Conn> {
        let mut map = self.conns.lock().unwrap();
        map.entry(registry.to_string())
            .or_insert_with(|| {
                let listed = is_listed_insecure(&self.opts.insecure_registries, registry)
                    || is_listed_insecure(&self.opts.insecure_registries, api_host);
                Arc::new(Conn {
                    registry: registry.to_string(),
                    host: api_host.to_string(),
                    plain_allowed: listed || is_loopback(api_host),
                    http: if listed {
                        self.insecure().clone()
                    } else if is_loopback(api_host) {
                        self.local.clone()
                    } else {
                        self.secure().clone()
                    },
                    state: tokio::sync::Mutex::new(ConnState::default()),
                    secrets: Mutex::new(Vec::new()),
                    base_url: std::sync::RwLock::new(None),
                })
            })
            .clone()
    }

    /// A client for a host that is not a registry (token realm, redirect target).
    fn client_for(&self, url: &Url) -> &reqwest::Client {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        if is_listed_insecure(&self.opts.insecure_registries, &host) {
            self.insecure()
        } else if is_loopback(&host) {
            &self.local
        } else {
            self.secure()
        }
    }

    fn plain_allowed_url(&self, url: &Url) -> bool {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return false,
        };
        is_loopback(&host) || is_listed_insecure(&self.opts.insecure_registries, &host)
    }

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
    fn adopt_record(&self, conn: &Conn, st: &mut ConnState) -> bool {
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
    async fn drop_record(&self, conn: &Conn) {
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
    async fn ping(&self, conn: &Conn, st: &mut ConnState, c: &Counter) -> Result<(), RegistryError> {
        let schemes = Self::schemes(conn);
        let mut backoff = Backoff::new(&self.opts.retry);
        loop {
            backoff.attempt();
            let mut last: Option<(String, String)> = None;
            let mut tls_failure: Option<(String, String)> = None;
            let mut retry_after_hint = None;
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
                match res {
                    Ok(resp) => {
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
                            retry_after_hint = retry_after(resp.headers());
                            last = Some((url, format!("HTTP {}", status)));
                            break;
                        }
                        let scheme_found = if status == StatusCode::UNAUTHORIZED {
                            let challenges: Vec<auth::Challenge> = resp
                                .headers()
                                .get_all(WWW_AUTHENTICATE)
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .flat_map(auth::parse_www_authenticate)
                                .collect();
                            match AuthScheme::from_challenges(&challenges) {
                                Some(s) => s,
                                None => return Err(RegistryError::Protocol {
                                    registry: conn.registry.clone(),
                                    what: "authentication challenge".into(),
                                    detail:
                                        "GET /v2/ answered 401 without a Basic or Bearer challenge fnbuild understands"
                                            .into(),
                                }),
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
                        return Ok(());
                    }
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
                        last = Some((url, describe_transport(&e)));
                    }
                }
            }
            let (address, detail) = last.unwrap_or_default();
            match backoff.next_delay(retry_after_hint) {
                Some(d) => {
                    tracing::debug!(registry = %conn.registry, delay_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                }
                None => {
                    if detail.starts_with("HTTP ") {
                        return Err(RegistryError::RetriesExhausted {
                            registry: conn.registry.clone(),
                            what: "GET /v2/".into(),
                            attempts: backoff.attempts(),
                            elapsed: backoff.elapsed(),
                            last: detail,
                        });
                    }
                    return Err(RegistryError::Unreachable {
                        registry: conn.registry.clone(),
                        address,
                        detail: format!(
                            "{detail} ({} attempts in {:.1?})",
                            backoff.attempts(),
                            backoff.elapsed()
                        ),
                    });
                }
            }
        }
    }

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
        let challenges: Vec<auth::Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_www_authenticate)
            .collect();
        if let Some(s) = AuthScheme::from_challenges(&challenges) {
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
        let mut backoff = Backoff::new(&self.opts.retry);
        let identity = matches!(cred, Some((Credential::IdentityToken(_), _)));
        if !identity {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
        }
        loop {
            backoff.attempt();
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
            let res = rb.send().await;
            let (status, headers, body) = match res {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    match read_capped(r, TOKEN_BODY_CAP).await {
                        Ok(b) => (status, headers, b),
                        Err(e) => {
                            if let Some(d) = backoff.next_delay(None) {
                                tokio::time::sleep(d).await;
                                continue;
                            }
                            return Err(self.unreachable(conn, &url, &e, &backoff));
                        }
                    }
                }
                Err(e) => {
                    if !is_tls_error(&e) {
                        if let Some(d) = backoff.next_delay(None) {
                            tokio::time::sleep(d).await;
                            continue;
                        }
                    }
                    return Err(self.unreachable(conn, &url, &e, &backoff));
                }
            };
            tracing::debug!(url = %url, status = status.as_u16(), "token response");
            if retryable_status(status) {
                if let Some(d) = backoff.next_delay(retry_after(&headers)) {
                    tokio::time::sleep(d).await;
                    continue;
                }
                return Err(RegistryError::RetriesExhausted {
                    registry: conn.registry.clone(),
                    what: "getting an access token".into(),
                    attempts: backoff.attempts(),
                    elapsed: backoff.elapsed(),
                    last: conn.redact(&describe_error_body(status.as_u16(), &body)),
                });
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = conn.redact(&describe_error_body(status.as_u16(), &body));
                return Err(match cred {
                    Some((_, source_desc)) => RegistryError::AuthFailed {
                        registry: conn.registry.clone(),
                        repository: repository.to_string(),
                        source_desc: source_desc.clone(),
                        detail: format!("the token service answered {detail}"),
                    },
                    None => RegistryError::AuthRequired {
                        registry: conn.registry.clone(),
                        repository: repository.to_string(),
                        searched: self.creds.describe(),
                    },
                });
            }
            if !status.is_success() {
                return Err(RegistryError::Refused {
                    registry: conn.registry.clone(),
                    repository: repository.to_string(),
                    what: "an access token".into(),
                    detail: conn.redact(&describe_error_body(status.as_u16(), &body)),
                    codes: super::error::error_codes(&body),
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
            return Ok(Token {
                atoms: auth::scope_atoms(scopes),
                value: value.to_string(),
                expires: Instant::now() + life.saturating_sub(Duration::from_secs(10)),
            });
        }
    }

    pub fn unreachable(&self, conn: &Conn, url: &Url, e: &reqwest::Error, backoff: &Backoff) -> RegistryError {
        let address = url.origin().ascii_serialization();
        if is_tls_error(e) {
            RegistryError::Tls {
                registry: conn.registry.clone(),
                address,
                detail: describe_transport(e),
            }
        } else {
            RegistryError::Unreachable {
                registry: conn.registry.clone(),
                address,
                detail: format!(
                    "{} ({} attempts in {:.1?})",
                    describe_transport(e),
                    backoff.attempts(),
                    backoff.elapsed()
                ),
            }
        }
    }

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
            let on_registry = conn
                .base_url
                .read()
                .unwrap()
                .as_ref()
                .is_some_and(|b| same_origin(&url, b));
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
            if follow && hop < MAX_REDIRECTS && resp.status().is_redirection() {
                if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                    if let Ok(next) = resolve_location(&url, loc) {
                        let scheme_ok = next.scheme() == "https"
                            || (next.scheme() == "http" && (url.scheme() == "http" || self.plain_allowed_url(&next)));
                        if scheme_ok {
                            url = next;
                            continue;
                        }
                    }
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
        let mut backoff = Backoff::new(&self.opts.retry);
        let mut renewed = false;
        loop {
            backoff.attempt();
            let auth = self.authorization(conn, scopes, repository, c).await?;
            let from_record = conn.state.lock().await.from_record;
            // URLs are made from the base known when the caller made them; a registry whose
            // record proved stale may since have been found on the other scheme.
            if let Some(base) = conn.base_url.read().unwrap().as_ref() {
                if req.url.scheme() != base.scheme() && same_host(&req.url, base) {
                    let _ = req.url.set_scheme(base.scheme());
                }
            }
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
                Ok((resp, _)) => from_record && resp.status() == StatusCode::BAD_REQUEST && req.url.scheme() == "http",
            };
            if stale {
                self.drop_record(conn).await;
                continue;
            }
            match res {
                Err(e) => {
                    if !is_tls_error(&e) {
                        if let Some(d) = backoff.next_delay(None) {
                            tracing::debug!(what = %req.what, error = %describe_transport(&e), delay_ms = d.as_millis() as u64, "retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                    }
                    return Err(self.unreachable(conn, &req.url, &e, &backoff));
                }
                Ok((resp, url)) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED
                        && !renewed
                        && self.renew(conn, auth.as_deref(), resp.headers()).await
                    {
                        renewed = true;
                        continue;
                    }
                    if retryable_status(status) {
                        let ra = retry_after(resp.headers());
                        let body = read_capped(resp, ERROR_BODY_CAP).await.unwrap_or_default();
                        match backoff.next_delay(ra) {
                            Some(d) => {
                                tracing::debug!(what = %req.what, status = status.as_u16(), delay_ms = d.as_millis() as u64, "retrying");
                                tokio::time::sleep(d).await;
                                continue;
                            }
                            None => {
                                let mut last = describe_error_body(status.as_u16(), &body);
                                if let Some(ra) = ra {
                                    last.push_str(&format!(", Retry-After {}s", ra.as_secs()));
                                }
                                return Err(RegistryError::RetriesExhausted {
                                    registry: conn.registry.clone(),
                                    what: req.what.clone(),
                                    attempts: backoff.attempts(),
                                    elapsed: backoff.elapsed(),
                                    last: conn.redact(&last),
                                });
                            }
                        }
                    }
                    return Ok((resp, url));
                }
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
        let codes = super::error::error_codes(body);
        match status {
            401 => {
                let cred = conn.state.lock().await.credential.clone().flatten();
                match cred {
                    Some((_, source_desc)) => RegistryError::AuthFailed {
                        registry: conn.registry.clone(),
                        repository: repository.to_string(),
                        source_desc,
                        detail,
                    },
                    None => RegistryError::AuthRequired {
                        registry: conn.registry.clone(),
                        repository: repository.to_string(),
                        searched: self.creds.describe(),
                    },
                }
            }
            403 => RegistryError::Denied {
                registry: conn.registry.clone(),
                repository: repository.to_string(),
                action: if what.starts_with("GET") || what.starts_with("HEAD") {
                    "pull".into()
                } else {
                    "push".into()
                },
                detail,
            },
            404 => match kind {
                Kind::Manifest(r)
                    if codes.is_empty()
                        || codes
                            .iter()
                            .any(|c| matches!(c, ErrorCode::ManifestUnknown | ErrorCode::NameUnknown)) =>
                {
                    RegistryError::ManifestUnknown {
                        reference: format!("{}/{}:{}", conn.registry, repository, r).replace(":sha256:", "@sha256:"),
                        detail,
                    }
                }
                Kind::Blob(d) => RegistryError::BlobUnknown {
                    registry: conn.registry.clone(),
                    repository: repository.to_string(),
                    digest: d.to_string(),
                    detail,
                },
                _ => RegistryError::Refused {
                    registry: conn.registry.clone(),
                    repository: repository.to_string(),
                    what: what.to_string(),
                    detail,
                    codes,
                },
            },
            _ => RegistryError::Refused {
                registry: conn.registry.clone(),
                repository: repository.to_string(),
                what: what.to_string(),
                detail: match super::error::hint_for_codes(&codes) {
                    Some(h) => format!("{detail}; {h}"),
                    None => detail,
                },
                codes,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let req = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        // Relative path with query string.
        let u = resolve_location(&req, "/v2/a/b/blobs/uploads/uuid-1?_state=abc%3D&x=1").unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid-1?_state=abc%3D&x=1"
        );
        // Absolute on another host.
        let u = resolve_location(&req, "https://storage.example.com/up/1?sig=x").unwrap();
        assert_eq!(u.as_str(), "https://storage.example.com/up/1?sig=x");
        // Relative to the request path.
        let u = resolve_location(&req, "uuid-2?s=1").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid-2?s=1");
        // Scheme-relative.
        let u = resolve_location(&req, "//other:9/x").unwrap();
        assert_eq!(u.as_str(), "http://other:9/x");
        // Appending the digest keeps the existing query.
        let mut u = resolve_location(&req, "/v2/a/b/blobs/uploads/u?_state=a%2Bb").unwrap();
        u.query_pairs_mut().append_pair("digest", "sha256:00");
        assert_eq!(u.query(), Some("_state=a%2Bb&digest=sha256%3A00"));
        assert!(resolve_location(&req, "http://[bad").is_err());
    }

    #[test]
    fn loopback_and_insecure() {
        for l in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(l), "{l}");
        }
        for n in ["10.0.0.1:5000", "example.com", "[::2]:1", "localhost.example.com"] {
            assert!(!is_loopback(n), "{n}");
        }
        let list = vec!["reg.local:5000".to_string(), "http://other.lan/".to_string()];
        assert!(is_listed_insecure(&list, "reg.local:5000"));
        assert!(!is_listed_insecure(&list, "reg.local:5001"));
        assert!(is_listed_insecure(&list, "other.lan:443"));
        assert!(!is_listed_insecure(&list, "x.io"));
    }

    #[test]
    fn backoff_budget() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(5),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let mut b = Backoff::new(&p);
        b.attempt();
        let d1 = b.next_delay(None).unwrap();
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        b.attempt();
        let d2 = b.next_delay(None).unwrap();
        assert!(
            d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
            "{d2:?}"
        );
        // Retry-After is honoured.
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(2))).unwrap(),
            Duration::from_secs(2)
        );
        // But not beyond the total budget.
        assert_eq!(b.next_delay(Some(Duration::from_secs(6))), None);
        b.attempt();
        assert_eq!(b.next_delay(None), None);
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
    }
}
