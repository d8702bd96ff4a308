//! Authentication: `WWW-Authenticate` challenges, docker config.json credentials and bearer
//! token scopes. Nothing here logs or formats a secret.
//! (Just over 600 lines because of its tests, from line ~385: one per challenge and config shape.)

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::RegistryError;

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme: `basic` or `bearer` (others are kept but unsupported).
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The challenges of every `WWW-Authenticate` header of an answer.
pub(crate) fn challenges(headers: &reqwest::header::HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

/// Parse a `WWW-Authenticate` header value into its challenges (RFC 7235: a header may
/// carry several, each `scheme param=value, param="quoted, value"`).
pub(crate) fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    loop {
        skip_ws(&mut i);
        while i < s.len() && s[i] == b',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= s.len() {
            break;
        }
        // A token: either a new scheme or a parameter name of the current challenge.
        let start = i;
        while i < s.len() && is_token(s[i]) {
            i += 1;
        }
        if i == start {
            // Garbage: skip one byte.
            i += 1;
            continue;
        }
        let token = &header[start..i];
        let mut j = i;
        skip_ws(&mut j);
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            // Parameter of the current challenge (token68 values such as "abc==" are rare for
            // registries and are not supported).
            j += 1;
            skip_ws(&mut j);
            let value = if j < s.len() && s[j] == b'"' {
                j += 1;
                let mut v = String::new();
                while j < s.len() && s[j] != b'"' {
                    if s[j] == b'\\' && j + 1 < s.len() {
                        j += 1;
                    }
                    // Push the full UTF-8 character.
                    let ch = header[j..].chars().next().unwrap();
                    v.push(ch);
                    j += ch.len_utf8();
                }
                j += 1; // closing quote
                v
            } else {
                let vs = j;
                while j < s.len() && s[j] != b',' && s[j] != b' ' {
                    j += 1;
                }
                header[vs..j].to_string()
            };
            out.last_mut().unwrap().params.push((token.to_ascii_lowercase(), value));
            i = j;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            i = j;
        }
    }
    out
}

/// How a registry wants to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthScheme {
    /// `GET /v2/` answered without a challenge.
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl AuthScheme {
    /// The preferred scheme among challenges (Bearer over Basic); `None` if none is usable.
    pub fn from_challenges(ch: &[Challenge]) -> Option<AuthScheme> {
        if let Some(b) = ch.iter().find(|c| c.scheme == "bearer") {
            if let Some(realm) = b.param("realm") {
                return Some(AuthScheme::Bearer {
                    realm: realm.to_string(),
                    service: b.param("service").map(str::to_string),
                });
            }
        }
        if ch.iter().any(|c| c.scheme == "basic") {
            return Some(AuthScheme::Basic);
        }
        None
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    UsernamePassword {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json, or a helper's `<token>` user).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UsernamePassword { username, .. } => {
                write!(f, "UsernamePassword {{ username: {username:?}, password: <redacted> }}")
            }
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// The `Authorization: Basic …` value for this credential (identity tokens are sent as
    /// the password of the user `<token>`, as docker does).
    pub fn basic_header(&self) -> String {
        use base64::Engine;
        let raw = match self {
            Credential::UsernamePassword { username, password } => format!("{username}:{password}"),
            Credential::IdentityToken(t) => format!("<token>:{t}"),
        };
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// The secret parts, so that callers can make sure they never show up in text.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Credential::UsernamePassword { password, .. } => vec![password.clone()],
            Credential::IdentityToken(t) => vec![t.clone()],
        }
    }
}

/// Where credentials come from: one docker config.json file (or none).
#[derive(Debug, Clone)]
pub(crate) struct CredentialSource {
    /// The config file to read; `None` when no file applies.
    pub path: Option<PathBuf>,
    /// Whether the file was named explicitly (then it must exist).
    pub explicit: bool,
}

impl CredentialSource {
    /// `--registry-config FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn resolve(
        explicit: Option<&Path>,
        docker_config: Option<&std::ffi::OsStr>,
        home: Option<&std::ffi::OsStr>,
    ) -> Self {
        if let Some(p) = explicit {
            return CredentialSource {
                path: Some(p.to_path_buf()),
                explicit: true,
            };
        }
        if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
            return CredentialSource {
                path: Some(Path::new(dir).join("config.json")),
                explicit: false,
            };
        }
        CredentialSource {
            path: home
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(h).join(".docker").join("config.json")),
            explicit: false,
        }
    }

    pub fn from_env(explicit: Option<&Path>) -> Self {
        Self::resolve(
            explicit,
            std::env::var_os("DOCKER_CONFIG").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
    }

    /// A short description of where credentials were looked for (for error messages).
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("looked in {}", p.display()),
            None => "no docker config file: neither DOCKER_CONFIG nor HOME is set".to_string(),
        }
    }

    /// Look up the credential for `registry` (host[:port] as written in references; `docker.io`
    /// for Docker Hub). Returns the credential and a description of where it came from.
    pub fn lookup(&self, registry: &str) -> Result<Option<(Credential, String)>, RegistryError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.explicit => return Ok(None),
            Err(e) => {
                return Err(RegistryError::Credentials {
                    registry: registry.to_string(),
                    detail: format!("cannot read the registry config {}: {e}", path.display()),
                })
            }
        };
        let keys: Vec<&str> = if registry == crate::oci::reference::DOCKER_HUB {
            vec!["https://index.docker.io/v1/", "docker.io"]
        } else {
            vec![registry]
        };
        for key in keys {
            match lookup_in_config(&bytes, key) {
                Ok(Some((cred, how))) => {
                    return Ok(Some((cred, format!("{how} from {}", path.display()))));
                }
                Ok(None) => continue,
                Err(detail) => {
                    return Err(RegistryError::Credentials {
                        registry: registry.to_string(),
                        detail: format!("{detail} (in {})", path.display()),
                    })
                }
            }
        }
        Ok(None)
    }
}

/// Find credentials for `server` in a config.json's bytes. The error string never contains a secret.
pub(crate) fn lookup_in_config(bytes: &[u8], server: &str) -> Result<Option<(Credential, &'static str)>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    // Which mechanism will answer, for the "from …" description.
    let how = describe_mechanism(bytes, server);
    match docker_credential::get_credential_from_reader(bytes, server) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some((Credential::UsernamePassword { username, password }, how)))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some((Credential::IdentityToken(t), how))),
        Err(E::NoCredentialConfigured) => Ok(None),
        Err(E::ConfigReadError) | Err(E::ConfigNotFound) => Err("the registry config is not valid JSON in docker's config.json format".into()),
        Err(E::CredentialDecodingError) => Err(format!("the \"auth\" entry for {server} is not base64 of user:password")),
        Err(E::CredentialMismatchError) => Err(format!("the \"auth\" entry for {server} does not match its username and password")),
        Err(E::HelperCommunicationError) => Err(format!(
            "the credential helper configured for {server} could not be run; install it (docker-credential-NAME on PATH) or remove it from credHelpers/credsStore"
        )),
        Err(E::MalformedHelperResponse) => Err(format!("the credential helper for {server} answered with something that is not credentials JSON")),
        Err(E::HelperFailure { helper, stdout, stderr }) => {
            // Helpers say "credentials not found" on stdout when they hold nothing for a server.
            if stdout.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            let why = super::error::one_line(if stderr.trim().is_empty() { &stdout } else { &stderr }, 160);
            Err(format!("credential helper {helper} failed: {why}"))
        }
    }
}

fn describe_mechanism(bytes: &[u8], server: &str) -> &'static str {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return "credentials";
    };
    if v.get("credHelpers").and_then(|h| h.get(server)).is_some() {
        return "credential helper (credHelpers)";
    }
    if v.get("auths").and_then(|a| a.as_object()).is_some_and(|a| {
        a.keys().any(|k| {
            let k = k.trim_start_matches("https://").trim_start_matches("http://");
            let k = k.split('/').next().unwrap_or(k);
            k == server
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or(server)
        })
    }) {
        return "auths entry";
    }
    if v.get("credsStore").is_some() {
        return "credential store (credsStore)";
    }
    "credentials"
}

/// The set of `repository:NAME:ACTION` atoms a scope list grants or needs.
pub(crate) fn scope_atoms(scopes: &[String]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for scope in scopes {
        // resource type : name (may contain ':' for registry:catalog:*) : actions
        let Some((head, actions)) = scope.rsplit_once(':') else {
            continue;
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            set.insert(format!("{head}:{a}"));
            if a == "*" {
                // `*` implies pull and push.
                set.insert(format!("{head}:pull"));
                set.insert(format!("{head}:push"));
            }
        }
    }
    set
}

/// Scopes for pushing to `target`, mounting from `from` repositories: push scope first.
pub(crate) fn push_scopes(target: &str, from: &[String]) -> Vec<String> {
    let mut scopes = vec![format!("repository:{target}:pull,push")];
    for f in from {
        let s = format!("repository:{f}:pull");
        if f != target && !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes
}

pub(crate) fn pull_scopes(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

/// A token endpoint's answer.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn bearer(&self) -> Option<&str> {
        self.access_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.token.as_deref().filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn parses_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        let ch = parse_www_authenticate(h);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].scheme, "bearer");
        assert_eq!(ch[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(ch[0].param("service"), Some("registry.docker.io"));
        assert_eq!(ch[0].param("scope"), Some("repository:samalba/my-app:pull,push"));
        assert_eq!(
            AuthScheme::from_challenges(&ch),
            Some(AuthScheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
    }

    #[test]
    fn parses_odd_challenges() {
        // Unquoted values, spaces, escapes, error param, several challenges in one header.
        let h = r#"Basic realm="Registry Realm", Bearer realm=https://r.io/t , service = "a \"q\" b",error="insufficient_scope""#;
        let ch = parse_www_authenticate(h);
        assert_eq!(ch.len(), 2, "{ch:?}");
        assert_eq!(ch[0].scheme, "basic");
        assert_eq!(ch[0].param("realm"), Some("Registry Realm"));
        assert_eq!(ch[1].param("realm"), Some("https://r.io/t"));
        assert_eq!(ch[1].param("service"), Some("a \"q\" b"));
        assert_eq!(ch[1].param("error"), Some("insufficient_scope"));
        assert!(matches!(
            AuthScheme::from_challenges(&ch),
            Some(AuthScheme::Bearer { .. })
        ));

        let ch = parse_www_authenticate(r#"basic realm="x""#);
        assert_eq!(AuthScheme::from_challenges(&ch), Some(AuthScheme::Basic));
        assert_eq!(parse_www_authenticate(""), vec![]);
        // Bearer without realm is unusable.
        assert_eq!(
            AuthScheme::from_challenges(&parse_www_authenticate("Bearer service=x")),
            None
        );
        // Scope values with commas inside quotes stay whole.
        let ch = parse_www_authenticate(r#"Bearer realm="r",scope="repository:a:pull,push repository:b:pull""#);
        assert_eq!(ch[0].param("scope"), Some("repository:a:pull,push repository:b:pull"));
    }

    #[test]
    fn parser_never_panics_on_odd_input() {
        for h in [
            "Bearer realm=\"ünïcödé\", service=\"x\\",
            "é=é, Bearer realm=\"a\"",
            "Bearer realm=",
            "Bearer realm=\"unterminated",
            ",,, ,",
            "=x",
            "Bearer ,realm=\"r\"",
            "Basic\tRealm=\"R\"",
        ] {
            let _ = parse_www_authenticate(h);
        }
        let ch = parse_www_authenticate("Bearer realm=\"ünï\"");
        assert_eq!(ch[0].param("realm"), Some("ünï"));
        assert_eq!(
            parse_www_authenticate("Bearer ,realm=\"r\"")[0].param("realm"),
            Some("r")
        );
    }

    #[test]
    fn scopes() {
        let s = push_scopes(
            "team/app",
            &["library/node".into(), "team/app".into(), "library/node".into()],
        );
        assert_eq!(s, vec!["repository:team/app:pull,push", "repository:library/node:pull"]);
        let atoms = scope_atoms(&s);
        assert!(atoms.contains("repository:team/app:push"));
        assert!(atoms.contains("repository:library/node:pull"));
        assert!(!atoms.contains("repository:library/node:push"));
        assert!(scope_atoms(&["repository:x:*".into()]).contains("repository:x:push"));
        assert!(scope_atoms(&["registry:catalog:*".into()]).contains("registry:catalog:*"));
    }

    #[test]
    fn credential_source_resolution() {
        use std::ffi::OsStr;
        let s = CredentialSource::resolve(
            Some(Path::new("/x/c.json")),
            Some(OsStr::new("/d")),
            Some(OsStr::new("/h")),
        );
        assert_eq!(s.path.as_deref(), Some(Path::new("/x/c.json")));
        assert!(s.explicit);
        let s = CredentialSource::resolve(None, Some(OsStr::new("/d")), Some(OsStr::new("/h")));
        assert_eq!(s.path.as_deref(), Some(Path::new("/d/config.json")));
        let s = CredentialSource::resolve(None, None, Some(OsStr::new("/h")));
        assert_eq!(s.path.as_deref(), Some(Path::new("/h/.docker/config.json")));
        assert!(!s.explicit);
        let s = CredentialSource::resolve(None, None, None);
        assert_eq!(s.path, None);
        assert_eq!(s.lookup("r.io").unwrap(), None);
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn config_json_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
                "127.0.0.1:5000": {"auth": b64("alice:s3cr3t:with:colons")},
                "https://ghcr.io": {"username": "bob", "password": "pw"},
                "quay.io": {"identitytoken": "refresh-xyz"},
                "bad.io": {"auth": "!!!notbase64"}
            }
        });
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let src = CredentialSource::resolve(None, Some(dir.path().as_os_str()), None);

        let (c, how) = src.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            c,
            Credential::UsernamePassword {
                username: "hubuser".into(),
                password: "hubpass".into()
            }
        );
        assert!(how.contains("config.json"), "{how}");
        let (c, _) = src.lookup("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            c,
            Credential::UsernamePassword {
                username: "alice".into(),
                password: "s3cr3t:with:colons".into()
            }
        );
        let (c, _) = src.lookup("ghcr.io").unwrap().unwrap();
        assert_eq!(
            c,
            Credential::UsernamePassword {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        let (c, _) = src.lookup("quay.io").unwrap().unwrap();
        assert_eq!(c, Credential::IdentityToken("refresh-xyz".into()));
        assert!(format!("{c:?}").contains("redacted"));
        assert!(!format!("{c:?}").contains("refresh-xyz"));
        assert_eq!(src.lookup("other.io").unwrap(), None);
        let err = src.lookup("bad.io").unwrap_err().to_string();
        assert!(err.contains("bad.io") && err.contains("base64"), "{err}");

        // A missing default file means anonymous; a missing explicit file is an error.
        let missing = CredentialSource::resolve(None, Some(dir.path().join("nope").as_os_str()), None);
        assert_eq!(missing.lookup("r.io").unwrap(), None);
        let explicit = CredentialSource::resolve(Some(&dir.path().join("nope.json")), None, None);
        let err = explicit.lookup("r.io").unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");

        // A broken file is reported with its path.
        std::fs::write(&path, b"{not json").unwrap();
        let err = src.lookup("r.io").unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn config_json_from_docker_config_env() {
        // The one test in this crate that touches DOCKER_CONFIG.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&serde_json::json!({"auths": {"r.example": {"auth": b64("u:p")}}})).unwrap(),
        )
        .unwrap();
        let old = std::env::var_os("DOCKER_CONFIG");
        std::env::set_var("DOCKER_CONFIG", dir.path());
        let src = CredentialSource::from_env(None);
        match old {
            Some(v) => std::env::set_var("DOCKER_CONFIG", v),
            None => std::env::remove_var("DOCKER_CONFIG"),
        }
        let (c, _) = src.lookup("r.example").unwrap().unwrap();
        assert_eq!(
            c,
            Credential::UsernamePassword {
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let cfg = br#"{"credHelpers": {"h.io": "fnbuild-test-no-such-helper"}}"#;
        let err = lookup_in_config(cfg, "h.io").unwrap_err();
        assert!(err.contains("could not be run"), "{err}");
        // Other registries are not affected by a per-registry helper.
        assert_eq!(lookup_in_config(cfg, "other.io").unwrap(), None);
    }

    #[test]
    fn basic_header() {
        let c = Credential::UsernamePassword {
            username: "a".into(),
            password: "b".into(),
        };
        assert_eq!(c.basic_header(), format!("Basic {}", b64("a:b")));
    }
}
