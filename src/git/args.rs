//! `fnbuild build --git-url`: the flags, named as Knative `func` names its (`--git-url`,
//! `--git-dir`), with Kyma's `reference` and its auth Secret's keys.

use super::{Auth, HostKeys, Request};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Default)]
pub struct GitArgs {
    /// Build from this git repository instead of a directory: https://, http://, git://,
    /// ssh:// or user@host:path. One commit is fetched (shallow); its URL and commit are recorded
    /// as org.opencontainers.image.source and .revision.
    #[arg(help_heading = "Git source", long, value_name = "URL")]
    pub git_url: Option<String>,
    /// The branch, tag or commit to build (Kyma's `reference`; default: the repository's default
    /// branch).
    #[arg(help_heading = "Git source", long, value_name = "REF", requires = "git_url")]
    pub git_ref: Option<String>,
    /// The function's directory in the repository (Kyma's `baseDir`; default: its root).
    #[arg(help_heading = "Git source", long, value_name = "DIR", requires = "git_url")]
    pub git_dir: Option<String>,
    /// A directory with the credentials, one file each, as a mounted Secret has them:
    /// `username` and `password` (HTTPS; Kyma's basic auth, kubernetes.io/basic-auth), or `key`
    /// / `ssh-privatekey` with an optional `password` / `passphrase` for it (SSH; Kyma's key
    /// auth, kubernetes.io/ssh-auth). Never copied into the image, the cache or the log.
    #[arg(help_heading = "Git source", long, value_name = "DIR", requires = "git_url")]
    pub git_auth: Option<PathBuf>,
    /// SSH: trust only the host keys in this known_hosts file (default: the `known_hosts` of
    /// --git-auth DIR, as a Secret carries it, else OpenSSH's own files).
    #[arg(help_heading = "Git source", long, value_name = "FILE", requires = "git_url")]
    pub git_known_hosts: Option<PathBuf>,
    /// SSH: accept any host key (a man in the middle could then serve any code).
    #[arg(
        help_heading = "Git source",
        long,
        requires = "git_url",
        conflicts_with = "git_known_hosts"
    )]
    pub git_insecure_ignore_host_key: bool,
}

/// The key of an auth Secret (or file of --git-auth DIR) with the SSH host keys to trust, as
/// Flux names it.
pub const KNOWN_HOSTS_KEY: &str = "known_hosts";

fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = dir.join(name);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("--git-auth: cannot read {}", p.display())),
    }
}

fn text(b: Vec<u8>, what: &str) -> Result<String> {
    let s = String::from_utf8(b).map_err(|_| anyhow::anyhow!("--git-auth: {what} is not text"))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// The credentials in a Secret-like directory.
pub fn read_auth(dir: &Path) -> Result<Auth> {
    if !dir.is_dir() {
        bail!("--git-auth {}: not a directory", dir.display());
    }
    auth_from(|name| read(dir, name), &format!("--git-auth {}", dir.display()))
}

/// The credentials in a Secret's data (the controller's reading of a Function's auth Secret).
pub fn auth_from_secret(data: &std::collections::BTreeMap<String, Vec<u8>>, what: &str) -> Result<Auth> {
    auth_from(|name| Ok(data.get(name).cloned()), what)
}

/// Kyma's keys (basic: `username`, `password`; key: `key`, its passphrase in `password`) and the
/// Kubernetes types' (`kubernetes.io/basic-auth`; `kubernetes.io/ssh-auth`: `ssh-privatekey`).
fn auth_from(read: impl Fn(&str) -> Result<Option<Vec<u8>>>, what: &str) -> Result<Auth> {
    let key = match read("key")? {
        Some(k) => Some(k),
        None => read("ssh-privatekey")?,
    };
    let password = read("password")?;
    if let Some(key) = key {
        let passphrase = match (password, read("passphrase")?) {
            (_, Some(p)) | (Some(p), None) => Some(text(p, "the passphrase")?).filter(|p| !p.is_empty()),
            (None, None) => None,
        };
        return Ok(Auth::Key { key, passphrase });
    }
    match (read("username")?, password) {
        (Some(u), Some(p)) => Ok(Auth::Basic {
            username: text(u, "username")?,
            password: text(p, "password")?,
        }),
        _ => bail!("{what}: give `username` and `password`, or `key` (or `ssh-privatekey`)"),
    }
}

/// `fnbuild fetch-source`: a build Job's fetch step.
#[derive(clap::Args, Debug)]
pub struct FetchSourceArgs {
    #[command(flatten)]
    pub git: GitArgs,
    /// An empty directory to fetch into: the function's directory is then
    /// DIR/checkout/<--git-dir>, which the later steps take as their source.
    pub dir: PathBuf,
}

impl GitArgs {
    /// The fetch these flags ask for; `None` without --git-url.
    pub fn request(&self) -> Result<Option<Request>> {
        let Some(url) = &self.git_url else { return Ok(None) };
        Ok(Some(Request {
            url: url.clone(),
            reference: self.git_ref.clone(),
            dir: self.git_dir.clone(),
            auth: self.git_auth.as_deref().map(read_auth).transpose()?,
            host_keys: if self.git_insecure_ignore_host_key {
                HostKeys::Any
            } else {
                let with_auth = self
                    .git_auth
                    .as_ref()
                    .map(|d| d.join(KNOWN_HOSTS_KEY))
                    .filter(|f| f.is_file());
                HostKeys::Known(self.git_known_hosts.clone().or(with_auth))
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kymas_secrets_and_kubernetes_types() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("username"), "bot\n").unwrap();
        std::fs::write(d.path().join("password"), "pa55word").unwrap();
        assert_eq!(
            read_auth(d.path()).unwrap(),
            Auth::Basic {
                username: "bot".into(),
                password: "pa55word".into()
            }
        );
        std::fs::write(d.path().join("key"), "KEY").unwrap();
        assert_eq!(
            read_auth(d.path()).unwrap(),
            Auth::Key {
                key: b"KEY".to_vec(),
                passphrase: Some("pa55word".into())
            },
            "Kyma's key auth: `password` is the key's passphrase"
        );
        let k = tempfile::tempdir().unwrap();
        std::fs::write(k.path().join("ssh-privatekey"), "KEY").unwrap();
        assert_eq!(
            read_auth(k.path()).unwrap(),
            Auth::Key {
                key: b"KEY".to_vec(),
                passphrase: None
            }
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(read_auth(empty.path())
            .unwrap_err()
            .to_string()
            .contains("give `username` and `password`"));
    }
}
