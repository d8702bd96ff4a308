//! A Function from git: its reference resolved to a commit with `git ls-remote` (nothing is
//! cloned by the controller), with the credentials of its auth Secret. The commit and the
//! directory are inputs of the image tag, so a new commit is a new build; the build Job's fetch
//! step checks out exactly that commit.

use super::{reason, Error, Reconciling};
use crate::desired::GitBuild;
use crate::types::{condition, GitRepositoryStatus, Status};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

impl Reconciling<'_> {
    /// Resolves the reference into `self.git`; false (ConfigurationReady=False, SourceUpdateFailed)
    /// when the repository or its Secret cannot say.
    pub(super) async fn git_source(&mut self) -> Result<bool, Error> {
        let Some(repo) = self.f.spec.source.git_repository.clone() else {
            return Ok(false);
        };
        let url = fnbuild::git::public_url(&repo.url);
        let (auth, secret_version) = match &repo.auth {
            None => (None, String::new()),
            Some(a) => match self.auth(&a.secret_name).await? {
                Ok((auth, version)) => (Some(auth), version),
                Err(msg) => return self.source_failed(msg).await,
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
        let request = fnbuild::git::Request {
            url: repo.url.clone(),
            reference: repo.reference.clone().filter(|r| !r.trim().is_empty()),
            dir: None,
            auth,
            host_keys: fnbuild::git::HostKeys::Known(None),
        };
        let known = self
            .ctx
            .git_heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let commit = match known.filter(|(at, _)| at.elapsed() < fresh) {
            Some((_, c)) => c,
            None => {
                let resolved = tokio::task::spawn_blocking(move || {
                    let work = fnbuild::scratch::Scratch::new()?;
                    fnbuild::git::ls_remote(&request, work.path())
                })
                .await;
                let c = match resolved {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return self.source_failed(format!("{e:#}")).await,
                    Err(e) => return self.source_failed(format!("{url}: the check stopped: {e}")).await,
                };
                let mut heads = self.ctx.git_heads.lock().unwrap_or_else(|p| p.into_inner());
                heads.retain(|_, (at, _)| at.elapsed() < fresh);
                heads.insert(key, (Instant::now(), c.clone()));
                c
            }
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

    async fn source_failed(&mut self, msg: String) -> Result<bool, Error> {
        self.configuration_failed(reason::SOURCE_UPDATE_FAILED, msg).await;
        Ok(false)
    }

    /// The credentials in the Function's auth Secret (its namespace's) and the Secret's
    /// resourceVersion, or what is wrong with it.
    async fn auth(&self, secret: &str) -> Result<Result<(fnbuild::git::Auth, String), String>, Error> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Some(s) = api.get_opt(secret).await? else {
            return Ok(Err(format!(
                "the git auth Secret {secret} is not in namespace {}",
                self.ns
            )));
        };
        let version = s.resource_version().unwrap_or_default();
        let data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        Ok(
            fnbuild::git::auth_from_secret(&data, &format!("the git auth Secret {secret}"))
                .map(|a| (a, version))
                .map_err(|e| e.to_string()),
        )
    }
}
