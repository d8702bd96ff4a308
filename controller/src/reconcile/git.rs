//! A Function from git: its reference resolved to a commit with `git ls-remote` (nothing is
//! cloned by the controller), with the credentials of its auth Secret. The commit and the
//! directory are inputs of the image tag, so a new commit is a new build; the build Job's fetch
//! step checks out exactly that commit.

use super::{reason, Error, Reconciling};
use crate::desired::GitBuild;
use crate::metrics::Metrics;
use crate::types::{condition, GitRepositorySource, GitRepositoryStatus, Status};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Function's auth Secret, read: its credentials, its resourceVersion, its SSH host keys.
struct SecretAuth {
    auth: fnbuild::git::Auth,
    version: String,
    known_hosts: Option<Vec<u8>>,
}

/// What a check was of: repository, reference, auth Secret.
fn checked_what(repo: &GitRepositorySource) -> String {
    format!(
        "{}\n{}\n{}",
        repo.url,
        repo.reference.as_deref().unwrap_or(""),
        repo.auth.as_ref().map_or("", |a| a.secret_name.as_str())
    )
}

/// A failed check in Kyma's words ("Authentication required for Git repository: URL",
/// "Git repository: URL source check failed: ..."), then the builder's line (which names the
/// repository too, so it is not said twice).
fn check_failed(url: &str, line: &str) -> String {
    let detail = line.strip_prefix(&format!("{url}: ")).unwrap_or(line);
    // The builder's hints name its own flags; a Function has its Secret.
    let detail = detail
        .replace(
            "authentication required (give --git-auth DIR)",
            "authentication required (give spec.source.gitRepository.auth a Secret)",
        )
        .replace(
            "(give --git-known-hosts FILE with it, or --git-insecure-ignore-host-key)",
            "(give the auth Secret the host's key as known_hosts)",
        );
    if detail.starts_with("authentication") {
        format!("Authentication required for Git repository: {url}: {detail}")
    } else {
        format!("Git repository: {url} source check failed: {detail}")
    }
}

/// Set to a new value (`kubectl annotate function NAME fnbuild.dev/recheck=$(date +%s)
/// --overwrite`), the Function's reference is resolved again at once.
pub const ANNOTATION_RECHECK: &str = "fnbuild.dev/recheck";
/// Kyma's: `"true"` and every reconcile of the Function asks the git server (no answer shared
/// with the reconciles just before or with other Functions).
pub const ANNOTATION_CONTINUOUS_GIT_CHECKOUT: &str = "serverless.kyma-project.io/continuousGitCheckout";

impl Reconciling<'_> {
    /// Resolves the reference into `self.git`; false (ConfigurationReady=False, SourceUpdateFailed)
    /// when the repository or its Secret cannot say.
    ///
    /// The server is asked once per poll interval per Function (as Kyma's controller skips the
    /// check of a ready Function checked lately), and sooner when a push event names the
    /// repository, the Function's source or recheck annotation changes, or it asks for
    /// continuous checks; the reconciles in between (its own status writes, its Job's and
    /// Deployment's events) reuse the commit.
    pub(super) async fn git_source(&mut self) -> Result<bool, Error> {
        let Some(repo) = self.f.spec.source.git_repository.clone() else {
            return Ok(false);
        };
        let url = fnbuild::git::public_url(&repo.url);
        // What the annotations ask for, read once for both steps below.
        let asked = self.check_asked();
        let commit = match self.recent_check(&repo, asked.0) {
            Some(c) => c,
            None => match self.check(&repo, asked).await? {
                Ok(c) => c,
                Err(msg) => return self.source_failed(msg).await,
            },
        };
        let dir = GitBuild::dir_of(repo.base_dir.as_deref());
        let reference = repo.reference.clone();
        let changed =
            self.status.commit.as_deref() != Some(commit.as_str()) || !self.is_true(condition::CONFIGURATION_READY);
        self.status.commit = Some(commit.clone());
        self.status.base_dir = repo.base_dir.clone();
        self.status.reference = reference.clone();
        self.status.git_repository = Some(GitRepositoryStatus {
            url: url.clone(),
            base_dir: repo.base_dir.clone(),
            reference: reference.clone(),
            commit: commit.clone(),
        });
        if changed {
            let msg = format!(
                "Sources of Function {} updated: {url} {} at {commit}",
                self.name,
                reference.as_deref().unwrap_or("HEAD")
            );
            self.set(
                condition::CONFIGURATION_READY,
                Status::True,
                reason::SOURCE_UPDATED,
                msg.clone(),
            );
            self.event(EventType::Normal, reason::SOURCE_UPDATED, msg).await;
        }
        self.git = Some(GitBuild {
            url: repo.url,
            commit,
            dir,
            auth_secret: repo.auth.map(|a| a.secret_name),
        });
        Ok(true)
    }

    /// The Function's annotations that ask for a check now: continuous checks (Kyma's), or a
    /// recheck value not acted on yet (returned, to be recorded once checked).
    fn check_asked(&self) -> (bool, Option<String>) {
        let annotation = |k: &str| self.f.annotations().get(k).map(|v| v.trim().to_string());
        let recheck = annotation(ANNOTATION_RECHECK).filter(|v| !v.is_empty());
        let uid = self.f.uid().unwrap_or_default();
        let new_recheck = recheck
            .clone()
            .filter(|v| self.ctx.rechecks.lock().unwrap_or_else(|p| p.into_inner()).get(&uid) != Some(v));
        let continuous = annotation(ANNOTATION_CONTINUOUS_GIT_CHECKOUT).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        (continuous || new_recheck.is_some(), new_recheck)
    }

    /// When a push event last named the repository.
    fn pushed_at(&self, url: &str) -> Option<Instant> {
        self.ctx
            .git_pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&crate::git_webhook::repository_key(url))
            .copied()
    }

    /// The commit this Function's last check found, while it holds: the same repository,
    /// reference and Secret, checked within the poll interval and after the last push event,
    /// the Function ready and nothing asking for a check.
    fn recent_check(&self, repo: &GitRepositorySource, asked_for: bool) -> Option<String> {
        if asked_for || !self.is_true(condition::CONFIGURATION_READY) {
            return None;
        }
        let uid = self.f.uid().unwrap_or_default();
        let (what, at, commit) = self
            .ctx
            .git_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .cloned()?;
        let poll = Duration::from_secs(self.settings.git_poll_seconds);
        let holds = what == checked_what(repo)
            && at.elapsed() < poll
            && self.pushed_at(&repo.url).is_none_or(|p| at > p)
            && self.status.commit.as_deref() == Some(commit.as_str());
        holds.then_some(commit)
    }

    /// Asks the git server for the commit the reference names (`git ls-remote`), with the
    /// credentials of the auth Secret; an answer given within the last moments for the same
    /// question (another Function on the repository) is reused. `Err`: what is wrong, to report.
    async fn check(
        &mut self,
        repo: &GitRepositorySource,
        (asked_for, recheck): (bool, Option<String>),
    ) -> Result<Result<String, String>, Error> {
        let url = fnbuild::git::public_url(&repo.url);
        let (auth, secret_version, known_hosts) = match &repo.auth {
            None => (None, String::new(), None),
            Some(a) => match self.auth(&a.secret_name).await? {
                Ok(s) => (Some(s.auth), s.version, s.known_hosts),
                // Kyma's words first.
                Err(msg) => return Ok(Err(format!("Getting git authorization data failed: {msg}"))),
            },
        };
        // The same repository, reference and credentials (by the Secret's version).
        let key = format!(
            "{}\n{}\n{}/{secret_version}",
            repo.url,
            repo.reference.as_deref().unwrap_or(""),
            self.ns
        );
        let fresh = Duration::from_millis((self.settings.git_poll_seconds * 500).min(2000));
        let pushed = self.pushed_at(&repo.url);
        // One question at a time per key: the Functions on a repository re-checked together
        // (a push event) wait for the first one's answer instead of each asking.
        let turn = self
            .ctx
            .git_asking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        let known = self
            .ctx
            .git_heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        // (Asked for by an annotation: only an answer the server gave after this reconcile began.)
        let reusable =
            |at: &Instant| at.elapsed() < fresh && pushed.is_none_or(|p| *at > p) && (!asked_for || *at > self.started);
        // When the question was asked: an answer is older than a push announced meanwhile.
        let (asked, commit) = match known.filter(|(at, _)| reusable(at)) {
            Some(k) => k,
            None => {
                let mut request = fnbuild::git::Request {
                    url: repo.url.clone(),
                    reference: repo.reference.clone().filter(|r| !r.trim().is_empty()),
                    dir: None,
                    auth,
                    host_keys: fnbuild::git::HostKeys::Known(None),
                };
                let asked = Instant::now();
                let resolved = tokio::task::spawn_blocking(move || {
                    let work = fnbuild::scratch::Scratch::new()?;
                    // SSH host keys: the Secret's `known_hosts` when it has them (as the fetch
                    // step reads them from the mounted Secret), else strict with none.
                    if let Some(k) = known_hosts {
                        let file = work.path().join("known_hosts");
                        std::fs::write(&file, k)?;
                        request.host_keys = fnbuild::git::HostKeys::Known(Some(file));
                    }
                    fnbuild::git::ls_remote(&request, work.path())
                })
                .await;
                let c = match resolved {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Ok(Err(check_failed(&url, &format!("{e:#}")))),
                    Err(e) => return Ok(Err(check_failed(&url, &format!("the check stopped: {e}")))),
                };
                Metrics::inc(&self.ctx.metrics.git_checks);
                let mut heads = self.ctx.git_heads.lock().unwrap_or_else(|p| p.into_inner());
                heads.retain(|_, (at, _)| at.elapsed() < fresh);
                self.ctx
                    .git_asking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|k, t| k == &key || heads.contains_key(k) || Arc::strong_count(t) > 1);
                heads.insert(key, (asked, c.clone()));
                (asked, c)
            }
        };
        let uid = self.f.uid().unwrap_or_default();
        if let Some(v) = recheck {
            tracing::info!(function = %self.name, namespace = %self.ns, commit = %commit, "re-checked on request ({ANNOTATION_RECHECK}={v})");
            self.ctx
                .rechecks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.clone(), v);
        }
        self.ctx
            .git_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, (checked_what(repo), asked, commit.clone()));
        Ok(Ok(commit))
    }

    async fn source_failed(&mut self, msg: String) -> Result<bool, Error> {
        self.configuration_failed(reason::SOURCE_UPDATE_FAILED, msg).await;
        Ok(false)
    }

    /// The credentials in the Function's auth Secret (its namespace's) and the Secret's
    /// resourceVersion, or what is wrong with it.
    async fn auth(&self, secret: &str) -> Result<Result<SecretAuth, String>, Error> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Some(s) = api.get_opt(secret).await? else {
            return Ok(Err(format!(
                "the git auth Secret {secret} is not in namespace {}",
                self.ns
            )));
        };
        let version = s.resource_version().unwrap_or_default();
        let data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let known_hosts = data.get(fnbuild::git::KNOWN_HOSTS_KEY).cloned();
        Ok(
            fnbuild::git::auth_from_secret(&data, &format!("the git auth Secret {secret}"))
                .map(|auth| SecretAuth {
                    auth,
                    version,
                    known_hosts,
                })
                .map_err(|e| e.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::check_failed;

    #[test]
    fn failed_checks_in_kymas_words() {
        let url = "https://git.example.com/fn.git";
        assert_eq!(
            check_failed(url, &format!("{url}: authentication required (give --git-auth DIR)")),
            format!("Authentication required for Git repository: {url}: authentication required (give spec.source.gitRepository.auth a Secret)")
        );
        assert_eq!(
            check_failed(url, &format!("{url}: authentication failed: the username or password is wrong")),
            format!("Authentication required for Git repository: {url}: authentication failed: the username or password is wrong")
        );
        assert_eq!(
            check_failed(url, &format!("{url}: its SSH host key is not known (give --git-known-hosts FILE with it, or --git-insecure-ignore-host-key)")),
            format!("Git repository: {url} source check failed: its SSH host key is not known (give the auth Secret the host's key as known_hosts)")
        );
        assert_eq!(
            check_failed(url, &format!("{url}: no branch or tag nope")),
            format!("Git repository: {url} source check failed: no branch or tag nope")
        );
    }
}
