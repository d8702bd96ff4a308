//! Scrubbing the secrets of credentials files (`--npmrc`, `--pip-conf`) from installer output.

use super::DependencyError;
use std::path::Path;

/// Scrubs the secret values of credentials files (tokens, passwords, URL user info) from text
/// that reaches the log or an error message.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn from_files(files: &[(&'static str, Option<&Path>)]) -> Result<Redactor, DependencyError> {
        let mut secrets = Vec::new();
        for (flag, path) in files {
            let Some(path) = path else { continue };
            let bytes = std::fs::read(path).map_err(|source| DependencyError::Credentials {
                flag,
                path: path.to_path_buf(),
                source,
            })?;
            secrets.extend(secret_values(&String::from_utf8_lossy(&bytes)));
        }
        secrets.sort();
        secrets.dedup();
        // Known to the whole process from now on: logs and error lines are scrubbed too.
        for s in &secrets {
            crate::secrets::register(s);
        }
        Ok(Redactor { secrets })
    }

    /// The raw secret values found.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// `text` without these secrets or the build's others, in any of their encodings.
    pub fn redact(&self, text: &str) -> String {
        let mut all = crate::secrets::registered();
        all.extend(self.secrets.iter().cloned());
        crate::secrets::redact_with(text, &all)
    }
}

/// Values in an npmrc / pip.conf that are secrets: those of keys that name a credential, and
/// the user info of URLs.
fn secret_values(text: &str) -> Vec<String> {
    const SECRET_KEYS: &[&str] = &["auth", "token", "password", "passwd", "secret", "_pass", "credential"];
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        // npmrc: `key=value` (keys like `//host/:_authToken` hold a colon); pip.conf: `key = value` or `key: value`.
        let Some(split) = line
            .find('=')
            .or_else(|| line.find(':').filter(|&i| !line[i..].starts_with("://")))
        else {
            continue;
        };
        let (key, value) = (line[..split].trim().to_ascii_lowercase(), line[split + 1..].trim());
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        let flag_like = ["true", "false", "yes", "no", "on", "off"].contains(&value.to_ascii_lowercase().as_str())
            || value.bytes().all(|b| b.is_ascii_digit());
        if SECRET_KEYS.iter().any(|k| key.contains(k)) && value.len() >= 4 && !flag_like {
            out.push(value.to_string());
        }
        // user:password@ in any URL, in this value or in the key (`//host/:_authToken` keys have none).
        for part in value.split_whitespace() {
            let mut rest = part;
            while let Some(i) = rest.find("://") {
                let after = &rest[i + 3..];
                let host_end = after.find('/').unwrap_or(after.len());
                if let Some(at) = after[..host_end].rfind('@') {
                    let userinfo = &after[..at];
                    if userinfo.len() >= 4 {
                        out.push(userinfo.to_string());
                    }
                    if let Some((_, password)) = userinfo.split_once(':') {
                        if password.len() >= 4 {
                            out.push(password.to_string());
                        }
                    }
                }
                // Tokens in the path (`/simple/<token>/`) or the query (`?token=...`).
                let path_end = after.find(char::is_whitespace).unwrap_or(after.len());
                let path = &after[host_end..path_end];
                for piece in path.split(['/', '?', '&', '=', ';']) {
                    if looks_like_token(piece) {
                        out.push(piece.to_string());
                    }
                }
                rest = &after[host_end..];
            }
        }
    }
    out
}

/// A URL piece that is a credential rather than a name: long, and a mix of letters and digits.
fn looks_like_token(piece: &str) -> bool {
    piece.len() >= 16
        && piece.bytes().any(|b| b.is_ascii_digit())
        && piece.bytes().any(|b| b.is_ascii_alphabetic())
        && piece
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_credentials_files_are_scrubbed() {
        let npmrc = "registry=https://npm.example.com/\n//npm.example.com/:_authToken=npm_SECRETTOKEN123\n; comment\nalways-auth=true\n_password=\"cGFzc3dvcmQ=\"\n";
        let pip = "[global]\nindex-url = https://user:pip-SECRET-pw@pypi.example.com/simple/\ntrusted-host = pypi.example.com\n";
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("npmrc"), dir.path().join("pip.conf"));
        std::fs::write(&a, npmrc).unwrap();
        std::fs::write(&b, pip).unwrap();
        let r = Redactor::from_files(&[("--npmrc", Some(&a)), ("--pip-conf", Some(&b)), ("--x", None)]).unwrap();
        let line = "GET https://npm.example.com/x Bearer npm_SECRETTOKEN123 Looking in indexes: https://user:pip-SECRET-pw@pypi.example.com/simple/ cGFzc3dvcmQ=";
        let scrubbed = r.redact(line);
        for secret in ["npm_SECRETTOKEN123", "pip-SECRET-pw", "cGFzc3dvcmQ="] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(
            scrubbed.contains("https://npm.example.com/x") && scrubbed.contains("pypi.example.com/simple/"),
            "{scrubbed}"
        );
        assert!(r.redact("always-auth true").contains("true"), "short values stay");

        // Tokens in an index URL's path or query, and their encodings.
        let pip = "[global]\nindex-url = https://pypi.example.com/simple/pathT0ken8a7b6c5d4e3f/\nextra-index-url = https://x.example.com/simple?access_token=QueryT0ken1234567890abc\n";
        let c = dir.path().join("pip2.conf");
        std::fs::write(&c, pip).unwrap();
        let r = Redactor::from_files(&[("--pip-conf", Some(&c))]).unwrap();
        use base64::Engine;
        let line = format!(
            "Looking in indexes: https://pypi.example.com/simple/pathT0ken8a7b6c5d4e3f/, https://x.example.com/simple?access_token=QueryT0ken1234567890abc {}",
            base64::engine::general_purpose::STANDARD.encode("u:pathT0ken8a7b6c5d4e3f")
        );
        let scrubbed = r.redact(&line);
        assert!(
            !scrubbed.contains("pathT0ken") && !scrubbed.contains("QueryT0ken"),
            "{scrubbed}"
        );
        assert!(!scrubbed.contains("dTpwYXRoVDBrZW44YTdiNmM1ZDRlM2Y"), "{scrubbed}");
        assert!(scrubbed.contains("https://pypi.example.com/simple/"), "{scrubbed}");
        let err = Redactor::from_files(&[("--npmrc", Some(&dir.path().join("missing")))])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read the --npmrc file "), "{err}");
    }
}
