//! Registry errors: every message is one line that names the registry (and repository) and
//! says what to do. None of them ever carries a credential or token. Also here: the error a
//! non-success status means, decided on the OCI error codes of its body, never on their text.

use std::path::PathBuf;
use std::time::Duration;

/// Anything that can go wrong while talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry} at {address}: {detail}; check that the registry is running and that the name and port are right")]
    Unreachable {
        registry: String,
        address: String,
        detail: String,
    },

    #[error("TLS connection to registry {registry} at {address} failed: {detail}; if it uses a private CA pass its certificate with --ca-cert FILE, or if it speaks plain HTTP list it with --insecure-registry {registry}")]
    Tls {
        registry: String,
        address: String,
        detail: String,
    },

    #[error("registry {registry} rejected the credentials for {repository} ({source_desc}): {detail}; check the user name and password or token (docker login {registry}, or --registry-config FILE)")]
    AuthFailed {
        registry: String,
        repository: String,
        /// Where the credentials came from (a file path or "credential helper NAME"), never the credentials.
        source_desc: String,
        detail: String,
    },

    #[error("registry {registry} requires authentication for {repository} and no credentials for it were found ({searched}); run `docker login {registry}` or pass --registry-config FILE")]
    AuthRequired {
        registry: String,
        repository: String,
        searched: String,
    },

    #[error("registry {registry} denied {action} access to {repository}: {detail}; check that the account may {action} this repository")]
    Denied {
        registry: String,
        repository: String,
        action: String,
        detail: String,
    },

    #[error("cannot read registry credentials for {registry}: {detail}")]
    Credentials { registry: String, detail: String },

    #[error("manifest {reference} not found: {detail}; check the repository name and the tag or digest")]
    ManifestUnknown { reference: String, detail: String },

    #[error("blob {digest} not found in {registry}/{repository}: {detail}")]
    BlobUnknown {
        registry: String,
        repository: String,
        digest: String,
        detail: String,
    },

    #[error("image {reference} has no manifest for platform {wanted} (it has: {available}); choose one of those with --platform")]
    PlatformNotFound {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("registry {registry} refused {what} for {repository}: {detail}")]
    Refused {
        registry: String,
        repository: String,
        what: String,
        /// `CODE: message (HTTP status)` from the registry's JSON error body.
        detail: String,
        /// The codes of that body, for decisions (the detail is for people).
        codes: Vec<ErrorCode>,
    },

    #[error("registry {registry} returned content for {what} whose digest is {actual}, not {expected}; the registry or a proxy in between is corrupting data")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },

    #[error("gave up on {what} at registry {registry} after {attempts} attempts in {elapsed:.1?}: {last}; the registry is failing or overloaded, try again later")]
    RetriesExhausted {
        registry: String,
        what: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },

    #[error("registry {registry} sent a response fnbuild cannot use ({what}): {detail}")]
    Protocol {
        registry: String,
        what: String,
        detail: String,
    },

    #[error("invalid push: {0}")]
    InvalidPush(String),

    #[error("invalid registry options: {0}")]
    InvalidOptions(String),

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Whether the error is worth another attempt (a transient network or server problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Unreachable { .. } | RegistryError::RetriesExhausted { .. }
        )
    }
}

/// An error code of the OCI distribution spec (and Docker's additions), as registries send them
/// in `{"errors": [{"code": ...}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A code this client does not know (kept as sent).
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "MANIFEST_UNVERIFIED" => ErrorCode::ManifestUnverified,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

/// A registry's JSON error body: `{"errors": [{"code": ..., "message": ...}]}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The `errors` array of a registry's JSON error body, rendered as `CODE: message; CODE: message`.
pub(crate) fn describe_error_body(status: u16, body: &[u8]) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut parts = Vec::new();
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        for e in b.errors.iter().take(3) {
            let text = match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                (true, false) => e.message.clone(),
                (true, true) => continue,
            };
            parts.push(text);
        }
    }
    if parts.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text = one_line(&text, 200);
        if !text.is_empty() && !text.starts_with('<') {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        format!("HTTP {status} {reason}")
    } else {
        format!("{} (HTTP {status} {reason})", one_line(&parts.join("; "), 400))
    }
}

/// What to do about a registry's error codes (appended to refusals).
pub(crate) fn hint_for_codes(codes: &[ErrorCode]) -> Option<&'static str> {
    use ErrorCode::*;
    codes.iter().find_map(|c| match c {
        DigestInvalid | SizeInvalid => {
            Some("the bytes sent do not match the digest or size given; the file changed or is corrupt, build again")
        }
        ManifestBlobUnknown | BlobUnknown => Some("a blob the manifest needs is missing from the repository"),
        ManifestInvalid | ManifestUnverified => {
            Some("the registry does not accept this manifest; check that it supports its media type")
        }
        NameInvalid => Some("the registry does not accept this repository name"),
        Denied | Unauthorized => Some("check that the account may push to this repository"),
        TooManyRequests => Some("the registry is rate limiting; wait, or log in for a higher limit"),
        Unsupported => Some("the registry does not support this operation"),
        _ => None,
    })
}

/// The first codes of a registry JSON error body (e.g. `MANIFEST_UNKNOWN`).
pub(crate) fn error_codes(body: &[u8]) -> Vec<ErrorCode> {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.errors.iter().map(|e| ErrorCode::parse(&e.code)).collect())
        .unwrap_or_default()
}

/// Where a response's status leads when it is not a success.
pub(crate) enum Kind<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Other,
}

/// Who asked a registry for what, for the error a refusal means.
pub(crate) struct Asked<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    /// The request ("GET manifest v1", "blob sha256:…").
    pub what: &'a str,
}

/// A 401, from a registry or its token service: the credentials sent (from `source`) were
/// refused, or there were none (looked for where `searched` says).
pub(crate) fn auth_error(
    asked: &Asked,
    source: Option<&str>,
    detail: String,
    searched: impl FnOnce() -> String,
) -> RegistryError {
    match source {
        Some(source_desc) => RegistryError::AuthFailed {
            registry: asked.registry.to_string(),
            repository: asked.repository.to_string(),
            source_desc: source_desc.to_string(),
            detail,
        },
        None => RegistryError::AuthRequired {
            registry: asked.registry.to_string(),
            repository: asked.repository.to_string(),
            searched: searched(),
        },
    }
}

/// The error that says what to do about a non-success `status` with `body` (described, and
/// redacted, in `detail`); `source` and `searched` as for [`auth_error`].
pub(crate) fn status_error(
    asked: &Asked,
    kind: Kind<'_>,
    status: u16,
    body: &[u8],
    detail: String,
    source: Option<&str>,
    searched: impl FnOnce() -> String,
) -> RegistryError {
    let codes = error_codes(body);
    let refused = |detail: String, codes: Vec<ErrorCode>| RegistryError::Refused {
        registry: asked.registry.to_string(),
        repository: asked.repository.to_string(),
        what: asked.what.to_string(),
        detail,
        codes,
    };
    match status {
        401 => auth_error(asked, source, detail, searched),
        403 => RegistryError::Denied {
            registry: asked.registry.to_string(),
            repository: asked.repository.to_string(),
            action: if asked.what.starts_with("GET") || asked.what.starts_with("HEAD") {
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
                    reference: format!("{}/{}:{}", asked.registry, asked.repository, r).replace(":sha256:", "@sha256:"),
                    detail,
                }
            }
            Kind::Blob(d) => RegistryError::BlobUnknown {
                registry: asked.registry.to_string(),
                repository: asked.repository.to_string(),
                digest: d.to_string(),
                detail,
            },
            _ => refused(detail, codes),
        },
        _ => {
            let detail = match hint_for_codes(&codes) {
                Some(h) => format!("{detail}; {h}"),
                None => detail,
            };
            refused(detail, codes)
        }
    }
}

/// Collapse whitespace to single spaces and cut at `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let cut: String = joined.chars().take(max).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

/// Describe a reqwest error without its URL (callers name the registry and address), walking
/// the source chain for the root cause ("connection refused", a certificate problem, …).
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !causes.iter().any(|p| p.contains(&text)) {
            causes.push(text);
        }
        cur = c.source();
    }
    let head = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() {
        "the connection broke while sending or receiving data".to_string()
    } else {
        "request failed".to_string()
    };
    // The innermost cause is the informative one ("Connection refused", "UnknownIssuer").
    match causes.last() {
        Some(inner) => one_line(&format!("{head}: {inner}"), 300),
        None => head,
    }
}

/// Whether a transport error is a TLS (certificate or handshake) failure.
pub(crate) fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let t = c.to_string().to_ascii_lowercase();
        if t.contains("certificate")
            || t.contains("tls")
            || t.contains("handshake")
            || t.contains("corrupt message")
            || t.contains("invalidcontenttype")
            || t.contains("unknownissuer")
            || t.contains("peer is incompatible")
        {
            return true;
        }
        cur = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid","detail":"digest mismatch"}]}"#;
        assert_eq!(
            describe_error_body(400, body),
            "BLOB_UPLOAD_INVALID: blob upload invalid (HTTP 400 Bad Request)"
        );
        assert_eq!(error_codes(body), vec![ErrorCode::BlobUploadInvalid]);
        assert_eq!(
            error_codes(br#"{"errors":[{"code":"X_NEW"}]}"#),
            vec![ErrorCode::Other("X_NEW".into())]
        );
        assert_eq!(describe_error_body(503, b""), "HTTP 503 Service Unavailable");
        assert_eq!(
            describe_error_body(502, b"<html>bad\n gateway</html>"),
            "HTTP 502 Bad Gateway"
        );
        assert_eq!(
            describe_error_body(500, b"oops\nthere"),
            "oops there (HTTP 500 Internal Server Error)"
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = RegistryError::AuthFailed {
            registry: "r.io".into(),
            repository: "a/b".into(),
            source_desc: "/tmp/config.json".into(),
            detail: "HTTP 401".into(),
        };
        let m = e.to_string();
        assert!(!m.contains('\n'));
        assert!(m.contains("r.io") && m.contains("a/b") && m.contains("docker login r.io"));
    }
}
