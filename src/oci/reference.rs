//! Image references (registry/repository:tag@digest), with docker.io normalisation.
//!
//! The grammar follows the distribution project's reference grammar (the one `docker pull`
//! uses): a name is one or more lowercase path components separated by `/`, optionally
//! preceded by a registry host (recognised because it contains `.` or `:`, or is
//! `localhost`); a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is
//! `algorithm:hex`. Names without a registry belong to Docker Hub (`docker.io`), and
//! one-component Docker Hub names live under `library/`.

use std::fmt;
use std::str::FromStr;

/// The registry that names without a host belong to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/node`.
    pub repository: String,
    /// Tag, e.g. `20-slim`. `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    /// Digest, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {input:?}: it is empty; give a name such as node:20-slim or registry.example.com/team/app:1.0")]
    Empty { input: String },
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidName { input: String, reason: String },
    #[error("invalid image reference {input:?}: tag {tag:?} {reason}; a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")]
    InvalidTag { input: String, tag: String, reason: String },
    #[error("invalid image reference {input:?}: digest {digest:?} {reason}; a digest looks like sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        input: String,
        digest: String,
        reason: String,
    },
    #[error("invalid image reference {input:?}: the registry host {registry:?} {reason}")]
    InvalidRegistry {
        input: String,
        registry: String,
        reason: String,
    },
}

impl Reference {
    /// Parse a reference (the same as `s.parse()`).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        s.parse()
    }

    /// The same repository with `tag` (any digest is dropped: a new tag names new content).
    pub fn with_tag(&self, tag: impl Into<String>) -> Self {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.into()),
            digest: None,
        }
    }

    /// The same repository and tag, pinned to `digest`.
    pub fn with_digest(&self, digest: impl Into<String>) -> Self {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest.into()),
        }
    }

    /// The same registry with another repository (no tag, no digest).
    pub fn with_repository(&self, repository: impl Into<String>) -> Self {
        Reference {
            registry: self.registry.clone(),
            repository: repository.into(),
            tag: None,
            digest: None,
        }
    }

    /// The host (and port) that serves the registry API: `docker.io` → `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag (else `latest`).
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether both references name the same repository of the same registry.
    pub fn same_repository(&self, other: &Reference) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input;
        if s.trim().is_empty() {
            return Err(ReferenceError::Empty {
                input: input.to_string(),
            });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::InvalidName {
                input: input.to_string(),
                reason: "it contains whitespace or control characters".into(),
            });
        }

        // Split off the digest.
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                validate_digest(d).map_err(|reason| ReferenceError::InvalidDigest {
                    input: input.to_string(),
                    digest: d.to_string(),
                    reason,
                })?;
                (rest, Some(d.to_string()))
            }
            None => (s, None),
        };

        // Split off the tag: the part after the last ':' if it contains no '/'.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                let t = &rest[i + 1..];
                validate_tag(t).map_err(|reason| ReferenceError::InvalidTag {
                    input: input.to_string(),
                    tag: t.to_string(),
                    reason,
                })?;
                (&rest[..i], Some(t.to_string()))
            }
            _ => (rest, None),
        };

        if name.is_empty() {
            return Err(ReferenceError::InvalidName {
                input: input.to_string(),
                reason: "the repository name is missing".into(),
            });
        }

        // Split off the registry host.
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') =>
            {
                (first.to_string(), remainder.to_string())
            }
            Some((first, _)) if first.chars().any(|c| c.is_ascii_uppercase()) => {
                return Err(ReferenceError::InvalidName {
                    input: input.to_string(),
                    reason: "repository names must be lowercase".into(),
                });
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };

        validate_registry(&registry).map_err(|reason| ReferenceError::InvalidRegistry {
            input: input.to_string(),
            registry: registry.clone(),
            reason,
        })?;

        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
            _ => registry,
        };

        validate_repository(&repository).map_err(|reason| ReferenceError::InvalidName {
            input: input.to_string(),
            reason,
        })?;

        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };

        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::InvalidName {
                input: input.to_string(),
                reason: format!("the name is longer than {MAX_NAME_LEN} characters"),
            });
        }

        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };

        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// Check a tag; returns the reason it is invalid.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("is empty".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("is longer than {MAX_TAG_LEN} characters"));
    }
    let mut chars = tag.chars();
    let first = chars.next().unwrap();
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(format!("starts with {first:?}"));
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("contains {bad:?}"));
    }
    Ok(())
}

/// Check a digest (`algorithm:hex`); returns the reason it is invalid.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((alg, hex)) = digest.split_once(':') else {
        return Err("has no algorithm prefix".into());
    };
    let expected_len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        "" => return Err("has an empty algorithm".into()),
        other => {
            // The OCI grammar allows other algorithms; we only verify sha256 and sha512.
            if !other
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-'))
            {
                return Err(format!("has an invalid algorithm {other:?}"));
            }
            return Err(format!("uses the unsupported algorithm {other:?}"));
        }
    };
    if hex.len() != expected_len {
        return Err(format!("has {} hex digits where {alg} needs {expected_len}", hex.len()));
    }
    if !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err("contains characters other than lowercase hex digits".into());
    }
    Ok(())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    if registry.is_empty() {
        return Err("is empty".into());
    }
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [IPv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return Err("has an unclosed '['".into());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("is not a valid IPv6 address".into());
        }
        match after {
            "" => (None, None),
            p if p.starts_with(':') => (None, Some(&p[1..])),
            _ => return Err("has text after ']' that is not a port".into()),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("has an empty host name".into());
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err("has an empty label (two dots in a row, or a leading or trailing dot)".into());
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err("may only contain letters, digits, '-' and '.'".into());
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("has a label that starts or ends with '-'".into());
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err(format!("has an invalid port {port:?}"));
        }
    }
    Ok(())
}

fn validate_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("the repository name is missing".into());
    }
    for component in repo.split('/') {
        if component.is_empty() {
            return Err("the repository name has an empty path component (a leading, trailing or double '/')".into());
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("repository names must be lowercase, but {component:?} is not"));
        }
        if let Some(bad) = component
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "the repository component {component:?} contains {bad:?}; use lowercase letters, digits, '.', '_' and '-'"
            ));
        }
        if !component_is_valid(component) {
            return Err(format!(
                "the repository component {component:?} must start and end with a letter or digit, and separate words with '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn component_is_valid(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_short_names() {
        let r = p("node:20-slim");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/node");
        assert_eq!(r.tag.as_deref(), Some("20-slim"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "docker.io/library/node:20-slim");
        assert_eq!(r.api_host(), "registry-1.docker.io");

        assert_eq!(p("node").to_string(), "docker.io/library/node:latest");
        assert_eq!(p("bitnami/redis").to_string(), "docker.io/bitnami/redis:latest");
        assert_eq!(p("docker.io/node").repository, "library/node");
        assert_eq!(
            p("index.docker.io/library/node:1").to_string(),
            "docker.io/library/node:1"
        );
    }

    #[test]
    fn registries_with_ports_and_paths() {
        let r = p("127.0.0.1:5000/a/b:t");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.api_host(), "127.0.0.1:5000");

        let r = p("localhost/app");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.repository, "app");
        assert_eq!(r.tag.as_deref(), Some("latest"));

        let r = p("localhost:5000/app");
        assert_eq!(r.registry, "localhost:5000");

        let r = p("ghcr.io/org/team/app:v1.2.3");
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/team/app");

        let r = p("[::1]:5000/app:x");
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(r.repository, "app");
    }

    #[test]
    fn digests() {
        let r = p(&format!("x@{D}"));
        assert_eq!(r.repository, "library/x");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/x@{D}"));
        assert_eq!(r.manifest_ref(), D);

        let r = p(&format!("reg.io:443/x:1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.to_string(), format!("reg.io:443/x:1@{D}"));
        let back: Reference = r.to_string().parse().unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn with_tag_and_digest() {
        let r = p("reg.io/x:1");
        assert_eq!(r.with_tag("2").to_string(), "reg.io/x:2");
        assert_eq!(r.with_digest(D).to_string(), format!("reg.io/x:1@{D}"));
        assert_eq!(r.with_digest(D).with_tag("3").to_string(), "reg.io/x:3");
        assert_eq!(r.with_repository("y/z").to_string(), "reg.io/y/z");
        assert!(r.same_repository(&p("reg.io/x:9")));
        assert!(!r.same_repository(&p("reg.io/y:1")));
    }

    #[test]
    fn separators() {
        for ok in ["a.b/c__d", "a-b", "a---b", "a_b.c", "x/y-z.w_v", "0/1"] {
            p(ok);
        }
    }

    #[test]
    fn bad_names_have_clear_errors() {
        let err = |s: &str| s.parse::<Reference>().unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("Node:20").contains("lowercase"), "{}", err("Node:20"));
        assert!(err("reg.io/Team/app").contains("lowercase"));
        assert!(err("a//b").contains("empty path component"));
        assert!(err("/a").contains("repository"));
        assert!(err("a/").contains("empty path component"));
        assert!(err("-a").contains("must start and end"));
        assert!(err("a..b").contains("must start and end") || err("a..b").contains("separate"));
        assert!(err("a b").contains("whitespace"));
        assert!(err("a$b").contains("'$'"));
        assert!(err("reg.io:99999/a").contains("port"));
        assert!(err("reg..io/a").contains("empty label"));
        assert!(err(":tag").contains("missing"));
        assert!(err("reg.io/").contains("missing") || err("reg.io/").contains("repository"));
        let long = format!("reg.io/{}", "a".repeat(260));
        assert!(err(&long).contains("longer than 255"));
    }

    #[test]
    fn bad_tags_and_digests() {
        let err = |s: &str| s.parse::<Reference>().unwrap_err();
        assert!(matches!(err("a:"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(err("a:-x"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(err("a:x+y"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(
            err(&format!("a:{}", "x".repeat(129))),
            ReferenceError::InvalidTag { .. }
        ));
        p(&format!("a:{}", "x".repeat(128)));
        p("a:_x.Y-1");
        assert!(matches!(err("a@sha256:abc"), ReferenceError::InvalidDigest { .. }));
        assert!(matches!(err("a@abc"), ReferenceError::InvalidDigest { .. }));
        assert!(matches!(
            err(&D.to_uppercase().replace("SHA256", "a@sha256")),
            ReferenceError::InvalidDigest { .. }
        ));
        assert!(matches!(
            err(&format!("a@md5:{}", "0".repeat(32))),
            ReferenceError::InvalidDigest { .. }
        ));
        let msg = err("a@sha256:abc").to_string();
        assert!(msg.contains("sha256:<64 lowercase hex digits>"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
