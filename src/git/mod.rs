//! Building from a git repository: exactly one commit is fetched (shallow, no tags, no history)
//! with the `git` binary, checked out into the build's scratch space without its `.git`, and the
//! function's directory in it (Kyma's `baseDir`) becomes the build's source.
//!
//! The `git` binary rather than a library: it is in every builder image already (Debian's), it
//! speaks every transport and credential form users have (smart HTTP, `git://`, SSH with
//! OpenSSH's key and known-hosts handling), and a library fetch (gitoxide) would add minutes of
//! compile time and megabytes to a binary whose fetch is one command.
//!
//! Credentials never reach git's command line (other processes can read argv): a password or an
//! SSH key's passphrase is handed over by `askpass` (this binary, called back by git or ssh),
//! a key is copied into a private file. Every secret is registered with [`crate::secrets`], so
//! no log line, error message or image layer carries one.

mod args;
pub mod askpass;
mod errors;

pub use args::{auth_from_secret, FetchSourceArgs, GitArgs, KNOWN_HOSTS_KEY};

use anyhow::{bail, Context, Result};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// How to log in.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Basic { username: String, password: String },
    Key { key: Vec<u8>, passphrase: Option<String> },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Basic { .. } => "Basic(****)",
            Auth::Key { .. } => "Key(****)",
        })
    }
}

/// Which SSH host keys are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Those in this known_hosts file (strict), or in OpenSSH's default ones.
    Known(Option<PathBuf>),
    /// Any (`--git-insecure-ignore-host-key`).
    Any,
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    /// A branch, a tag or a commit; `None`: the repository's default branch.
    pub reference: Option<String>,
    /// The function's directory in the repository (relative); `None`: its root.
    pub dir: Option<String>,
    pub auth: Option<Auth>,
    pub host_keys: HostKeys,
}

/// What was fetched.
#[derive(Debug)]
pub struct Fetched {
    /// The function's directory, in the checkout.
    pub source_dir: PathBuf,
    /// The commit (40 or 64 hex digits).
    pub commit: String,
    /// The repository's URL without credentials (for labels and messages).
    pub url: String,
}

/// `url` without a user or password in it.
pub fn public_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let sep = if rest.contains('/') { "/" } else { "" };
        return format!("{scheme}://{host}{sep}{path}");
    }
    url.to_string()
}

/// The function's directory: relative, without `..`; `""` and `.` mean the root.
fn checked_dir(dir: Option<&str>, url: &str) -> Result<PathBuf> {
    let d = dir.unwrap_or("").trim();
    let p = Path::new(d.trim_start_matches("./"));
    if p.is_absolute() {
        bail!("--git-dir {d}: give the function's directory relative to the root of {url}");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("--git-dir {d}: '..' would leave the repository {url}");
    }
    Ok(p.components().filter(|c| !matches!(c, Component::CurDir)).collect())
}

pub(crate) fn check_url(url: &str) -> Result<()> {
    // Not file:// (a Function's author would read the builder's own files).
    let ok = ["https://", "http://", "git://", "ssh://"]
        .iter()
        .any(|s| url.starts_with(s))
        || (url.contains('@') && url.contains(':') && !url.contains("://"));
    if !ok || url.starts_with('-') || url.chars().any(char::is_whitespace) {
        bail!(
            "--git-url {}: not a git URL (https://, http://, git://, ssh:// or user@host:path)",
            public_url(url)
        );
    }
    Ok(())
}

/// A reference git would read as an option, or one with characters no ref can have.
pub(crate) fn check_reference(r: &str) -> Result<()> {
    if r.is_empty()
        || r.starts_with('-')
        || r.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
    {
        bail!("--git-ref '{r}': not a branch, tag or commit name");
    }
    Ok(())
}

/// Fetches the request's commit into `work` (a fresh directory the caller removes).
pub fn fetch(req: &Request, work: &Path) -> Result<Fetched> {
    let url = public_url(&req.url);
    // A password in the URL itself is a secret too.
    if let Some((_, rest)) = req.url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                crate::secrets::register(password);
            }
        }
    }
    check_url(&req.url)?;
    if let Some(r) = &req.reference {
        check_reference(r)?;
    }
    let dir = checked_dir(req.dir.as_deref(), &url)?;
    let repo = work.join("checkout");
    let private = work.join("git-auth");
    std::fs::create_dir_all(&repo).with_context(|| format!("cannot make {}", repo.display()))?;
    let env = askpass::Env::prepare(&private, req.auth.as_ref(), &req.host_keys)?;

    let git = |args: &[&str]| -> Command {
        let mut c = git_command(&env);
        c.arg("-C").arg(&repo);
        c.args(args);
        c
    };
    run(git(&["init", "-q"]), &url, req)?;
    let reference = req.reference.as_deref().unwrap_or("HEAD");
    let mut f = git(&["fetch", "--depth", "1", "--no-tags", "--quiet", "--"]);
    f.arg(&req.url).arg(reference);
    run(f, &url, req)?;
    run(
        git(&[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            "FETCH_HEAD",
        ]),
        &url,
        req,
    )?;
    let commit = output(git(&["rev-parse", "HEAD"]), &url, req)?;
    // The image gets the files, not the repository.
    std::fs::remove_dir_all(repo.join(".git"))
        .with_context(|| format!("cannot remove the checkout's .git of {url}"))?;
    drop(env);
    let source_dir = repo.join(&dir);
    match std::fs::symlink_metadata(&source_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--git-dir {}: not a directory in {url} at {commit}", dir.display()),
        Err(_) => bail!("--git-dir {}: no such directory in {url} at {commit}", dir.display()),
    }
    Ok(Fetched {
        source_dir,
        commit,
        url,
    })
}

/// `fnbuild fetch-source`: one commit into `args.dir` (for a build Job's later steps, which
/// hold no git credentials); prints `{"source": DIR, "commit": C, "url": U}`.
pub fn fetch_source(args: &FetchSourceArgs) -> Result<()> {
    let Some(req) = args.git.request()? else {
        bail!("give the repository with --git-url");
    };
    let f = fetch(&req, &args.dir)?;
    tracing::info!(url = %f.url, commit = %f.commit, "fetched");
    let out = serde_json::json!({"source": f.source_dir, "commit": f.commit, "url": f.url});
    println!("{out}");
    Ok(())
}

/// `git` with credentials from askpass only (no helper of the user's is asked or told), no
/// prompt, and no local or `ext::` transport.
fn git_command(env: &askpass::Env) -> Command {
    let mut c = Command::new("git");
    c.args([
        "-c",
        "credential.helper=",
        "-c",
        "protocol.version=2",
        "-c",
        "protocol.file.allow=never",
        "-c",
        "protocol.ext.allow=never",
    ]);
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    env.apply(&mut c);
    c
}

/// Whether `r` is a full commit id (SHA-1 or SHA-256).
pub fn is_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `req.reference` names now (the default branch without one), asked of the server
/// with `git ls-remote`: nothing is cloned. A full commit id is its own answer. `work` is a fresh
/// private directory for the credentials, which the caller removes.
pub fn ls_remote(req: &Request, work: &Path) -> Result<String> {
    let url = public_url(&req.url);
    check_url(&req.url)?;
    let reference = req.reference.as_deref().unwrap_or("HEAD");
    check_reference(reference)?;
    if is_commit(reference) {
        return Ok(reference.to_ascii_lowercase());
    }
    let env = askpass::Env::prepare(&work.join("git-auth"), req.auth.as_ref(), &req.host_keys)?;
    let mut c = git_command(&env);
    c.args(["ls-remote", "--quiet", "--"]).arg(&req.url).arg(reference);
    let listed = output(c, &url, req)?;
    drop(env);
    resolve(&listed, reference).ok_or_else(|| anyhow::anyhow!("{url}: no branch or tag {reference}"))
}

/// The commit of `reference` in `git ls-remote` output: a branch, else a tag (its commit, when
/// annotated), else a full ref name.
fn resolve(listed: &str, reference: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listed.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(c, _)| c.to_string());
    find(&format!("refs/heads/{reference}"))
        .or_else(|| find(&format!("refs/tags/{reference}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{reference}")))
        .or_else(|| find(&format!("{reference}^{{}}")))
        .or_else(|| find(reference))
}

fn run(mut c: Command, url: &str, req: &Request) -> Result<()> {
    let out = c.output().context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        return Err(errors::explain(&String::from_utf8_lossy(&out.stderr), url, req));
    }
    Ok(())
}

fn output(mut c: Command, url: &str, req: &Request) -> Result<String> {
    let out = c.output().context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        return Err(errors::explain(&String::from_utf8_lossy(&out.stderr), url, req));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            public_url("https://u:p@example.com/a/b.git"),
            "https://example.com/a/b.git"
        );
        assert_eq!(public_url("https://example.com"), "https://example.com");
        assert_eq!(public_url("ssh://git@example.com:22/r"), "ssh://example.com:22/r");
        assert_eq!(public_url("git@example.com:team/r.git"), "git@example.com:team/r.git");
    }

    #[test]
    fn directories_stay_in_the_repository() {
        assert_eq!(checked_dir(None, "u").unwrap(), PathBuf::new());
        assert_eq!(checked_dir(Some("./fn/a/"), "u").unwrap(), PathBuf::from("fn/a"));
        assert!(checked_dir(Some("../x"), "u")
            .unwrap_err()
            .to_string()
            .contains("'..' would leave"));
        assert!(checked_dir(Some("a/../../x"), "u").is_err());
        assert!(checked_dir(Some("/etc"), "u").is_err());
    }

    #[test]
    fn references_resolve_as_git_would() {
        let listed = "1111111111111111111111111111111111111111\tHEAD\n\
            2222222222222222222222222222222222222222\trefs/heads/main\n\
            3333333333333333333333333333333333333333\trefs/tags/v1\n\
            4444444444444444444444444444444444444444\trefs/tags/v1^{}\n\
            5555555555555555555555555555555555555555\trefs/tags/light\n";
        assert_eq!(resolve(listed, "main").unwrap(), "2".repeat(40));
        assert_eq!(
            resolve(listed, "v1").unwrap(),
            "4".repeat(40),
            "an annotated tag's commit"
        );
        assert_eq!(resolve(listed, "light").unwrap(), "5".repeat(40));
        assert_eq!(resolve(listed, "HEAD").unwrap(), "1".repeat(40));
        assert_eq!(resolve(listed, "refs/heads/main").unwrap(), "2".repeat(40));
        assert!(resolve(listed, "nope").is_none());
        assert!(is_commit(&"a".repeat(40)) && !is_commit("abc"));
    }

    #[test]
    fn urls_and_references_git_would_misread() {
        assert!(check_url("--upload-pack=touch /tmp/x").is_err());
        assert!(check_url("https://example.com/r x").is_err());
        assert!(check_url("/local/path").is_err());
        assert!(check_url("git@example.com:team/r.git").is_ok());
        assert!(check_reference("--upload-pack=x").is_err());
        assert!(check_reference("main:evil").is_err());
        assert!(check_reference("refs/tags/v1.0").is_ok());
    }
}
