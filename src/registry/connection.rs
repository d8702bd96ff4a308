//! Which HTTP client talks to which host: one reqwest client (one connection pool) per kind of
//! host (loopback, verified TLS, `--insecure-registry`), one [`Conn`] per registry with what is
//! known of it (scheme, auth scheme, credentials, tokens), the rules on plain HTTP, which origin
//! may receive `Authorization`, and where a redirect may lead.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::LOCATION;
use reqwest::Url;

use super::auth::{AuthScheme, Credential, CredentialSource};
use super::error::{one_line, RegistryError};
use super::stats::{Counter, Stats};
use super::RegistryOptions;

/// The most of an error body that is read (what a message can use; a hostile registry may send
/// an endless one).
pub(crate) const ERROR_BODY_CAP: usize = 64 * 1024;

/// A response body, read up to `cap` bytes whatever its headers say; the rest is left unread.
pub(crate) async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
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

/// `host[:port]` of a URL, the port only when written.
fn host_port(url: &Url) -> Option<String> {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (Some(h), None) => Some(h.to_string()),
        _ => None,
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

/// Where a redirect answer to a GET or HEAD leads, if it may be followed: to HTTPS, or to plain
/// HTTP from plain HTTP or to a host allowed it.
pub(crate) fn redirect_target(inner: &Inner, url: &Url, resp: &reqwest::Response) -> Option<Url> {
    if !resp.status().is_redirection() {
        return None;
    }
    let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok())?;
    let next = resolve_location(url, loc).ok()?;
    let scheme_ok = next.scheme() == "https"
        || (next.scheme() == "http" && (url.scheme() == "http" || inner.plain_allowed_url(&next)));
    scheme_ok.then_some(next)
}

/// A bearer token and the scope atoms it carries.
pub(crate) struct Token {
    pub atoms: BTreeSet<String>,
    pub value: String,
    pub expires: Instant,
}

/// What is known of a registry: learnt by the probe (`ping.rs`) and by authentication
/// (`token.rs`), under one lock so that parallel requests wait for one probe and one token.
#[derive(Default)]
pub(crate) struct ConnState {
    pub pinged: bool,
    pub base: Option<Url>,
    pub scheme: Option<AuthScheme>,
    /// `None` = not looked up yet.
    pub credential: Option<Option<(Credential, String)>>,
    pub tokens: Vec<Token>,
    /// Base and scheme taken from the record of open registries, not from a probe this run.
    pub from_record: bool,
}

/// One registry: its client (connection pool), detected scheme and auth state.
pub(crate) struct Conn {
    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The host serving its API (`registry-1.docker.io`).
    pub host: String,
    pub plain_allowed: bool,
    pub http: reqwest::Client,
    pub state: tokio::sync::Mutex<ConnState>,
    pub secrets: Mutex<Vec<String>>,
    /// `scheme://host/` once known: the only origin that gets `Authorization`.
    pub base_url: std::sync::RwLock<Option<Url>>,
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

    /// Whether `url` is on the registry's own origin (the only one that gets `Authorization`).
    pub fn on_registry(&self, url: &Url) -> bool {
        self.base_url
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|b| same_origin(url, b))
    }

    /// URLs are made from the base known when the caller made them; a registry whose record
    /// proved stale may since have been found on the other scheme: move `url` to it.
    pub fn follow_base_scheme(&self, url: &mut Url) {
        if let Some(base) = self.base_url.read().unwrap().as_ref() {
            if url.scheme() != base.scheme() && same_host(url, base) {
                let _ = url.set_scheme(base.scheme());
            }
        }
    }
}

/// The shared inside of a [`super::Client`]: options, HTTP clients and connections, where
/// credentials come from, and the request totals.
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
    pub creds: CredentialSource,
    pub totals: Arc<Stats>,
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
    pub fn client_for(&self, url: &Url) -> &reqwest::Client {
        let host = host_port(url).unwrap_or_default();
        if is_listed_insecure(&self.opts.insecure_registries, &host) {
            self.insecure()
        } else if is_loopback(&host) {
            &self.local
        } else {
            self.secure()
        }
    }

    /// Whether plain HTTP may go to `url`'s host (loopback, or listed insecure).
    pub fn plain_allowed_url(&self, url: &Url) -> bool {
        let Some(host) = host_port(url) else {
            return false;
        };
        is_loopback(&host) || is_listed_insecure(&self.opts.insecure_registries, &host)
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
}
