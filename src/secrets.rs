//! The credentials a build holds, in every form they may take in text or in a file: kept out of
//! logs and error messages ([`redact`]) and out of image layers ([`Scanner`]).
//!
//! A secret is registered once, raw; its forms are derived here: base64 (standard and URL-safe,
//! at each of the three alignments it can have inside a longer encoded text, as in a docker
//! config's `auth` or an `Authorization: Basic` value), percent-encoded and JSON-escaped.
//! Values shorter than [`MIN_SECRET_LEN`] are not secrets worth the false alarms.

use base64::Engine;
use std::sync::{Mutex, OnceLock};

/// Shorter values are not treated as secrets (flags, ports, `true`).
pub const MIN_SECRET_LEN: usize = 6;
/// What a secret is replaced with in text.
pub const REDACTED: &str = "****";

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers `secret` for the rest of the process: every later [`redact`] scrubs it.
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
    }
}

/// Every secret registered so far.
pub fn registered() -> Vec<String> {
    registry().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `text` with every form of every registered secret, and every `Basic` / `Bearer` value,
/// replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let secrets = registered();
    redact_with(text, &secrets)
}

/// [`redact`] against an explicit list of raw secrets.
pub fn redact_with(text: &str, secrets: &[String]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .flat_map(|s| forms(s.as_bytes()))
        .filter_map(|f| String::from_utf8(f).ok())
        .collect();
    // Longest first, so that a form containing another is scrubbed whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_string();
    for f in &forms {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), REDACTED);
        }
    }
    redact_authorization(&out)
}

/// `Basic xxx` and `Bearer xxx` values (a registry that echoes the request's Authorization
/// header back), whoever's they are.
fn redact_authorization(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = ["Basic ", "Bearer ", "basic ", "bearer "]
            .iter()
            .filter_map(|w| rest.find(w).map(|i| (i, w.len())))
            .min();
        let Some((i, len)) = found else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + len]);
        let value = &rest[i + len..];
        let end = value
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=-_.~".contains(c)))
            .unwrap_or(value.len());
        if end >= 8 {
            out.push_str(REDACTED);
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
}

/// The byte strings that betray `secret` in a file or a text.
pub fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    if secret.len() < MIN_SECRET_LEN {
        return Vec::new();
    }
    let mut out = vec![secret.to_vec()];
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ];
    for engine in engines {
        // Inside a longer encoded text the secret starts at byte offset 0, 1 or 2 of a 3-byte
        // group: encode it behind that many filler bytes and keep the characters that depend
        // on the secret alone.
        for offset in 0..3usize {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(secret);
            let encoded = engine.encode(&padded);
            let skip = match offset {
                0 => 0,
                1 => 2,
                _ => 3,
            };
            // The last group mixes with whatever follows: drop it unless it is complete.
            let whole = (offset + secret.len()) / 3 * 4;
            let keep = encoded.as_bytes()[skip..whole.max(skip)].to_vec();
            if keep.len() >= 4 {
                out.push(keep);
            }
            // The form a whole encoded value takes (`user:secret` as `auth`).
            if offset == 0 {
                out.push(encoded.into_bytes());
            }
        }
    }
    let percent: String = secret
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    out.push(percent.clone().into_bytes());
    out.push(percent.to_lowercase().into_bytes());
    if let Ok(s) = std::str::from_utf8(secret) {
        let json = serde_json::to_string(s).unwrap_or_default();
        out.push(json.trim_matches('"').as_bytes().to_vec());
    }
    out.sort();
    out.dedup();
    out
}

/// Looks for the forms of a set of secrets in bytes (file contents, names, link targets).
pub struct Scanner {
    matcher: Option<aho_corasick::AhoCorasick>,
    longest: usize,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scanner(<{} bytes longest>)", self.longest)
    }
}

impl Scanner {
    pub fn new(secrets: &[String]) -> Scanner {
        let patterns: Vec<Vec<u8>> = secrets.iter().flat_map(|s| forms(s.as_bytes())).collect();
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = (!patterns.is_empty())
            .then(|| aho_corasick::AhoCorasick::new(&patterns).expect("secret patterns are plain bytes"));
        Scanner { matcher, longest }
    }

    /// A scanner for every secret registered so far.
    pub fn for_registered() -> Scanner {
        Scanner::new(&registered())
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    pub fn contains(&self, bytes: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(bytes))
    }

    /// A match state for bytes that come in pieces.
    pub fn stream(&self) -> ScanStream<'_> {
        ScanStream {
            scanner: self,
            tail: Vec::new(),
            found: false,
        }
    }

    /// Whether anything read from `reader` holds a secret; reads it to the end.
    pub fn scan_reader(&self, mut reader: impl std::io::Read) -> std::io::Result<bool> {
        let Some(m) = &self.matcher else {
            return Ok(false);
        };
        // Chunks overlapping by the longest pattern, so that no match spans unseen.
        let overlap = self.longest.saturating_sub(1);
        let mut buf = vec![0u8; 256 * 1024 + overlap];
        let mut kept = 0;
        loop {
            let n = reader.read(&mut buf[kept..])?;
            if n == 0 {
                return Ok(false);
            }
            let filled = kept + n;
            if m.is_match(&buf[..filled]) {
                return Ok(true);
            }
            kept = overlap.min(filled);
            buf.copy_within(filled - kept..filled, 0);
        }
    }
}

/// [`Scanner`] over a stream: each piece is looked at together with the end of the one before.
pub struct ScanStream<'s> {
    scanner: &'s Scanner,
    tail: Vec<u8>,
    /// Whether a secret was seen.
    pub found: bool,
}

impl ScanStream<'_> {
    /// Looks at the next piece; true once a secret was seen.
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        let Some(m) = &self.scanner.matcher else {
            return false;
        };
        if self.found {
            return true;
        }
        let overlap = self.scanner.longest.saturating_sub(1);
        if !self.tail.is_empty() {
            let head = &piece[..piece.len().min(overlap)];
            let mut joined = self.tail.clone();
            joined.extend_from_slice(head);
            self.found = m.is_match(&joined);
        }
        self.found = self.found || m.is_match(piece);
        if piece.len() >= overlap {
            self.tail.clear();
            self.tail.extend_from_slice(&piece[piece.len() - overlap..]);
        } else {
            self.tail.extend_from_slice(piece);
            let excess = self.tail.len().saturating_sub(overlap);
            self.tail.drain(..excess);
        }
        self.found
    }
}

/// `s` with control characters shown as escapes (`\n`, `\x1b`), so that a name always stays
/// on its one line and never reaches a terminal as a command.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The secret values of a docker config.json: every `auth` (and the password inside it),
/// `password`, `identitytoken` and `registrytoken`, at any depth.
pub fn docker_config_secrets(bytes: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_docker_secrets(&doc, &mut out);
    out
}

fn collect_docker_secrets(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = k.to_ascii_lowercase();
                match (key.as_str(), v.as_str()) {
                    ("auth", Some(s)) => {
                        out.push(s.to_string());
                        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                            if let Ok(raw) = String::from_utf8(raw) {
                                if let Some((_, password)) = raw.split_once(':') {
                                    out.push(password.to_string());
                                }
                                out.push(raw);
                            }
                        }
                    }
                    ("password" | "identitytoken" | "registrytoken", Some(s)) => out.push(s.to_string()),
                    _ => collect_docker_secrets(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_docker_secrets(i, out)),
        _ => {}
    }
}

/// Whether an environment variable's name says its value is a credential.
pub fn is_secret_env_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The values of this process's environment variables whose names say they are credentials.
pub fn environment_secrets() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, v)| is_secret_env_name(k) && v.len() >= MIN_SECRET_LEN)
        .map(|(_, v)| v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_found_and_scrubbed() {
        let secret = "s3cr3t-T0KEN/value";
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let texts = [
            format!("token {secret} here"),
            format!("auth: {}", b64(&format!("user:{secret}"))),
            format!("auth: {}", b64(&format!("us:{secret}"))),
            format!("auth: {}", b64(&format!("u:{secret}xyz"))),
            format!("{{\"auth\":\"{}\"}}", b64(&format!("{{\"x\":\"{secret}\"}}"))),
            "https://h/simple/s3cr3t-T0KEN%2Fvalue/pkg".to_string(),
            format!("{{\"t\":{}}}", serde_json::to_string(&format!("{secret}\"")).unwrap()),
        ];
        let scanner = Scanner::new(&[secret.to_string()]);
        for t in &texts {
            assert!(scanner.contains(t.as_bytes()), "not found in {t}");
            assert!(scanner.scan_reader(std::io::Cursor::new(t.as_bytes())).unwrap(), "{t}");
            let r = redact_with(t, &[secret.to_string()]);
            assert!(!scanner.contains(r.as_bytes()), "left in {r}");
        }
        assert!(!scanner.contains(b"nothing to see, s3cr3t-T0KEN alone is only a part"));
    }

    #[test]
    fn a_secret_across_chunk_boundaries_is_found() {
        let secret = "ABCDEFGHIJ-secret";
        let mut data = vec![b'x'; 256 * 1024 - 5];
        data.extend_from_slice(secret.as_bytes());
        data.extend(vec![b'y'; 1000]);
        let scanner = Scanner::new(&[secret.to_string()]);
        assert!(scanner.scan_reader(std::io::Cursor::new(&data)).unwrap());
        assert!(!Scanner::new(&[]).scan_reader(std::io::Cursor::new(&data)).unwrap());
    }

    #[test]
    fn a_stream_finds_a_secret_split_between_pieces() {
        let scanner = Scanner::new(&["0123456789-secret".to_string()]);
        let mut s = scanner.stream();
        assert!(!s.feed(b"aaaa01234"));
        assert!(!s.feed(b"56"));
        assert!(s.feed(b"789-secretzzz"));
        assert_eq!(escape_control("x\nerror: \x1b[31m"), "x\\nerror: \\x1b[31m");
    }

    #[test]
    fn authorization_values_are_scrubbed_whoever_they_belong_to() {
        let t = "registry said: unauthorized (sent Authorization: Basic dXNlcjpwYXNzd29yZA==, Bearer eyJhbGciOi.x.y)";
        let r = redact_with(t, &[]);
        assert!(!r.contains("dXNlcjpwYXNzd29yZA") && !r.contains("eyJhbGciOi"), "{r}");
        assert!(r.contains("Basic ****") && r.contains("Bearer ****"), "{r}");
        assert_eq!(redact_with("Basic auth is off", &[]), "Basic auth is off");
    }

    #[test]
    fn docker_config_secrets_include_the_decoded_password() {
        let auth = base64::engine::general_purpose::STANDARD.encode("me:hunter2-pw");
        let cfg = format!(r#"{{"auths":{{"r.io":{{"auth":"{auth}"}},"q.io":{{"identitytoken":"idtok-123456"}}}}}}"#);
        let s = docker_config_secrets(cfg.as_bytes());
        for want in [auth.as_str(), "hunter2-pw", "me:hunter2-pw", "idtok-123456"] {
            assert!(s.iter().any(|x| x == want), "{want} missing from {s:?}");
        }
        assert!(is_secret_env_name("NPM_TOKEN") && !is_secret_env_name("PATH"));
    }
}
