//! Push events from git hosts (GitHub, GitLab, Gitea, Forgejo, Gogs): a push re-checks, at
//! once, the Functions of the namespace in the URL whose repository it names; nothing else.
//!
//! A host posts to `/git-webhook/NAMESPACE`; the secret it signs with (GitHub, Gitea, Forgejo,
//! Gogs: HMAC-SHA256 of the body) or sends (GitLab: `X-Gitlab-Token`) is the `token` of the
//! Secret `fnbuild-git-webhook` in that namespace, so each team sets its own. An unsigned,
//! wrongly signed or unknown event is answered 401 and logged, and changes nothing; the
//! signature is checked before the body is parsed.

use crate::http::{self, Req, Resp};
use crate::metrics::Metrics;
use crate::reconcile::Context;
use crate::Function;
use hmac::{Hmac, Mac};
use hyper::{HeaderMap, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use sha2::Sha256;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Where the hosts post: `/git-webhook/NAMESPACE`.
pub const PATH_PREFIX: &str = "/git-webhook/";
/// The Secret, in the Function's namespace, with the webhook's secret.
pub const SECRET_NAME: &str = "fnbuild-git-webhook";
/// Its key.
pub const SECRET_KEY: &str = "token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitHost {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    Gogs,
}

impl GitHost {
    pub fn name(self) -> &'static str {
        match self {
            GitHost::GitHub => "GitHub",
            GitHost::GitLab => "GitLab",
            GitHost::Gitea => "Gitea",
            GitHost::Forgejo => "Forgejo",
            GitHost::Gogs => "Gogs",
        }
    }

    /// The host that sent a request, by its event header. Forgejo also sends Gitea's headers,
    /// and Gitea GitHub's and Gogs', so the most specific is looked for first.
    pub fn of(headers: &HeaderMap) -> Option<(GitHost, String)> {
        [
            (GitHost::Forgejo, "x-forgejo-event"),
            (GitHost::Gitea, "x-gitea-event"),
            (GitHost::Gogs, "x-gogs-event"),
            (GitHost::GitLab, "x-gitlab-event"),
            (GitHost::GitHub, "x-github-event"),
        ]
        .into_iter()
        .find_map(|(host, h)| Some((host, header(headers, h)?.to_string())))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// What a checked request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A push to the repositories known by these keys ([`repository_key`]).
    Push { host: GitHost, repositories: Vec<String> },
    /// GitHub's `ping` (sent when the webhook is made).
    Ping(GitHost),
    /// Another event (issues, merge requests…): nothing to do.
    Other(GitHost, String),
}

/// Why a request is refused (each is a 401, or a 400 for a body that is not a push).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a git host's webhook (no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, X-Forgejo-Event or X-Gogs-Event header)")]
    UnknownHost,
    #[error("{0} event without a {1} header: unsigned, ignored")]
    Unsigned(&'static str, &'static str),
    #[error("{0} event whose {1} does not match the secret: forged or signed with another secret, ignored")]
    BadSignature(&'static str, &'static str),
    #[error("{0} push event: {1}")]
    BadPayload(&'static str, String),
}

impl Refused {
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            Refused::BadPayload(..) => hyper::StatusCode::BAD_REQUEST,
            _ => hyper::StatusCode::UNAUTHORIZED,
        }
    }
}

/// Checks a request's signature (or token) with `secret`, then reads the event.
pub fn check(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Event, Refused> {
    let (host, event) = GitHost::of(headers).ok_or(Refused::UnknownHost)?;
    let name = host.name();
    match host {
        GitHost::GitLab => {
            let h = "X-Gitlab-Token";
            let token = header(headers, h).ok_or(Refused::Unsigned(name, h))?;
            if !constant_time_eq(token.as_bytes(), secret) {
                return Err(Refused::BadSignature(name, h));
            }
        }
        _ => {
            // Each host's own header, or GitHub's, which Gitea and Forgejo send as well.
            let own = match host {
                GitHost::Forgejo => Some("X-Forgejo-Signature"),
                GitHost::Gitea => Some("X-Gitea-Signature"),
                GitHost::Gogs => Some("X-Gogs-Signature"),
                _ => None,
            };
            let (h, hex_sig) = own
                .and_then(|h| header(headers, h).map(|v| (h, v)))
                .or_else(|| {
                    let h = "X-Hub-Signature-256";
                    header(headers, h).map(|v| (h, v.strip_prefix("sha256=").unwrap_or("")))
                })
                .ok_or(Refused::Unsigned(name, own.unwrap_or("X-Hub-Signature-256")))?;
            let sig = hex::decode(hex_sig).map_err(|_| Refused::BadSignature(name, h))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Refused::BadSignature(name, h))?;
            mac.update(body);
            mac.verify_slice(&sig).map_err(|_| Refused::BadSignature(name, h))?;
        }
    }
    let is_push = match host {
        GitHost::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        _ => event == "push",
    };
    if host == GitHost::GitHub && event == "ping" {
        return Ok(Event::Ping(host));
    }
    if !is_push {
        return Ok(Event::Other(host, event));
    }
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refused::BadPayload(name, format!("not JSON: {e}")))?;
    let payload = &payload;
    let mut repositories: Vec<String> = ["repository", "project"]
        .iter()
        .flat_map(|o| {
            [
                "clone_url",
                "ssh_url",
                "html_url",
                "git_url",
                "url",
                "git_http_url",
                "git_ssh_url",
                "http_url",
                "web_url",
                "homepage",
            ]
            .iter()
            .filter_map(move |k| payload[o][k].as_str())
        })
        .map(repository_key)
        .filter(|k| !k.is_empty())
        .collect();
    repositories.sort();
    repositories.dedup();
    if repositories.is_empty() {
        return Err(Refused::BadPayload(name, "names no repository URL".into()));
    }
    Ok(Event::Push { host, repositories })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A repository's URL as `host/path`, whatever the protocol: no scheme, user, password or port,
/// no `.git` or trailing `/`, lower case. A host's clone, SSH and web URLs of one repository
/// have the same key (`https://github.com/o/r.git`, `git@github.com:o/r.git`,
/// `ssh://git@github.com:22/O/r` → `github.com/o/r`).
pub fn repository_key(url: &str) -> String {
    let url = url.trim();
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        // scp-like `user@host:path`.
        None => url.split_once(':').unwrap_or(("", url)),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.find(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.split_once(':').map_or(host, |(h, _)| h),
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    if host.is_empty() {
        return String::new();
    }
    format!("{host}/{path}").to_ascii_lowercase()
}

// The receiver.

/// What the receiver works with: the controller's context (the Kubernetes client; the record of
/// pushes, which makes the next check ask the server), its cache of Functions, and the queue that
/// has a Function reconciled now.
#[derive(Clone)]
pub struct Receiver {
    pub ctx: Arc<Context>,
    pub functions: Store<Function>,
    /// The Secrets named [`SECRET_NAME`], in every namespace (a watch cache): a request, signed
    /// or not, makes no call to the API server.
    pub secrets: Store<Secret>,
    pub recheck: tokio::sync::mpsc::UnboundedSender<ObjectRef<Function>>,
}

/// Serve the git webhook (plain HTTP: a git host reaches it through an Ingress, which holds the
/// certificate) until the task is dropped.
pub async fn serve(listener: TcpListener, receiver: Receiver) {
    http::serve(listener, None, move |req| {
        let r = receiver.clone();
        async move { r.handle(req).await }
    })
    .await
}

impl Receiver {
    pub async fn handle(&self, req: Req) -> Resp {
        if req.path == "/healthz" {
            return Resp::text(StatusCode::OK, "ok");
        }
        let Some(ns) = req
            .path
            .strip_prefix(PATH_PREFIX)
            .map(|n| n.trim_end_matches('/'))
            .filter(|n| is_namespace_name(n))
        else {
            return Resp::text(
                StatusCode::NOT_FOUND,
                format!("post push events to {PATH_PREFIX}NAMESPACE"),
            );
        };
        if req.method != hyper::Method::POST {
            return Resp::text(StatusCode::METHOD_NOT_ALLOWED, "push events are POSTed");
        }
        let refuse = |status: StatusCode, msg: String| {
            Metrics::inc(&self.ctx.metrics.git_webhook_refused);
            tracing::warn!(namespace = %ns, reason = %msg, "git webhook: request refused, nothing re-checked");
            Resp::text(status, msg)
        };
        let Some(secret) = self.secret(ns) else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("namespace {ns} has no Secret {SECRET_NAME} with a '{SECRET_KEY}': it takes no push events"),
            );
        };
        match check(&req.headers, &req.body, &secret) {
            Err(e) => refuse(e.status(), e.to_string()),
            Ok(Event::Ping(_)) => Resp::text(StatusCode::OK, "pong"),
            Ok(Event::Other(host, event)) => Resp::text(
                StatusCode::ACCEPTED,
                format!("{} event '{event}': only pushes re-check Functions", host.name()),
            ),
            Ok(Event::Push { host, repositories }) => {
                Metrics::inc(&self.ctx.metrics.git_pushes);
                self.ctx.git_pushed(&repositories);
                let mut rechecked = Vec::new();
                for f in self.functions.state() {
                    let on_it = f.namespace().as_deref() == Some(ns)
                        && f.spec
                            .source
                            .git_repository
                            .as_ref()
                            .is_some_and(|g| repositories.contains(&repository_key(&g.url)));
                    if on_it && self.recheck.send(ObjectRef::from_obj(&*f)).is_ok() {
                        Metrics::inc(&self.ctx.metrics.git_push_rechecks);
                        rechecked.push(f.name_any());
                    }
                }
                rechecked.sort();
                tracing::info!(namespace = %ns, host = host.name(), repositories = ?repositories, functions = ?rechecked, "git push: re-checking");
                let body = serde_json::json!({ "rechecked": rechecked });
                Resp::json(body.to_string().into_bytes())
            }
        }
    }

    /// The namespace's webhook secret, without the spaces and newline around it (a Secret made
    /// `--from-file` has one); `None` without the Secret or with an empty token (which anyone
    /// could sign with).
    fn secret(&self, ns: &str) -> Option<Vec<u8>> {
        self.secrets
            .get(&ObjectRef::new(SECRET_NAME).within(ns))
            .and_then(|s| s.data.as_ref()?.get(SECRET_KEY).map(|v| v.0.trim_ascii().to_vec()))
            .filter(|t| !t.is_empty())
    }
}

/// A namespace's name as Kubernetes allows it (a DNS label): nothing else is looked up.
fn is_namespace_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/Octo/Fn.git","ssh_url":"git@github.com:Octo/Fn.git","html_url":"https://github.com/Octo/Fn"}}"#;

    /// GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    #[test]
    fn github_signature_as_documented() {
        let h = headers(&[
            ("X-GitHub-Event", "issues"),
            (
                "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        ]);
        assert_eq!(
            check(&h, b"Hello, World!", b"It's a Secret to Everybody"),
            Ok(Event::Other(GitHost::GitHub, "issues".into()))
        );
        assert_eq!(
            check(&h, b"Hello, World?", b"It's a Secret to Everybody"),
            Err(Refused::BadSignature("GitHub", "X-Hub-Signature-256"))
        );
        assert_eq!(
            check(&h, b"Hello, World!", b"another secret"),
            Err(Refused::BadSignature("GitHub", "X-Hub-Signature-256"))
        );
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signed_push_names_its_repository_by_every_url() {
        let sig = format!("sha256={}", sign(b"s3cret", PUSH.as_bytes()));
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]);
        assert_eq!(
            check(&h, PUSH.as_bytes(), b"s3cret"),
            Ok(Event::Push {
                host: GitHost::GitHub,
                repositories: vec!["github.com/octo/fn".into()]
            })
        );
    }

    #[test]
    fn unsigned_or_unknown_requests_are_refused() {
        let h = headers(&[("X-GitHub-Event", "push")]);
        assert_eq!(
            check(&h, PUSH.as_bytes(), b"s3cret"),
            Err(Refused::Unsigned("GitHub", "X-Hub-Signature-256"))
        );
        assert_eq!(
            check(&HeaderMap::new(), PUSH.as_bytes(), b"s3cret"),
            Err(Refused::UnknownHost)
        );
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=zz")]);
        assert_eq!(
            check(&h, PUSH.as_bytes(), b"s3cret"),
            Err(Refused::BadSignature("GitHub", "X-Hub-Signature-256"))
        );
        // An empty secret in the Secret signs nothing that a sender without it could not forge:
        // the receiver refuses before checking (see the server); here, a wrong one fails.
        let sig = format!("sha256={}", sign(b"", PUSH.as_bytes()));
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]);
        assert!(check(&h, PUSH.as_bytes(), b"s3cret").is_err());
    }

    #[test]
    fn gitlab_sends_its_token() {
        let body = r#"{"object_kind":"push","project":{"git_http_url":"http://gitlab.example/g/fn.git","git_ssh_url":"git@gitlab.example:g/fn.git","web_url":"http://gitlab.example/g/fn"},"repository":{"homepage":"http://gitlab.example/g/fn"}}"#;
        let ok = headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "s3cret")]);
        assert_eq!(
            check(&ok, body.as_bytes(), b"s3cret"),
            Ok(Event::Push {
                host: GitHost::GitLab,
                repositories: vec!["gitlab.example/g/fn".into()]
            })
        );
        let wrong = headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "s3cre")]);
        assert_eq!(
            check(&wrong, body.as_bytes(), b"s3cret"),
            Err(Refused::BadSignature("GitLab", "X-Gitlab-Token"))
        );
        let mr = headers(&[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", "s3cret")]);
        assert_eq!(
            check(&mr, body.as_bytes(), b"s3cret"),
            Ok(Event::Other(GitHost::GitLab, "Merge Request Hook".into()))
        );
    }

    #[test]
    fn gitea_and_forgejo_sign_with_their_own_header() {
        let sig = sign(b"s3cret", PUSH.as_bytes());
        // Gitea also sends GitHub's event header: it is still Gitea.
        let gitea = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", &sig),
        ]);
        assert!(matches!(
            check(&gitea, PUSH.as_bytes(), b"s3cret"),
            Ok(Event::Push {
                host: GitHost::Gitea,
                ..
            })
        ));
        let forgejo = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-Forgejo-Event", "push"),
            ("X-Forgejo-Signature", &sig),
        ]);
        assert!(matches!(
            check(&forgejo, PUSH.as_bytes(), b"s3cret"),
            Ok(Event::Push {
                host: GitHost::Forgejo,
                ..
            })
        ));
        let forged = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &sign(b"x", b"y"))]);
        assert_eq!(
            check(&forged, PUSH.as_bytes(), b"s3cret"),
            Err(Refused::BadSignature("Gitea", "X-Gitea-Signature"))
        );
    }

    #[test]
    fn a_push_without_a_repository_is_a_bad_request() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = format!("sha256={}", sign(b"s3cret", body));
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]);
        let e = check(&h, body, b"s3cret").unwrap_err();
        assert_eq!(e.status(), hyper::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn one_key_for_every_url_of_a_repository() {
        for url in [
            "https://github.com/Octo/Fn.git",
            "https://user:token@github.com/octo/fn",
            "git@github.com:octo/fn.git",
            "ssh://git@github.com:22/octo/fn.git/",
            "http://github.com:80/octo/fn",
        ] {
            assert_eq!(repository_key(url), "github.com/octo/fn", "{url}");
        }
        assert_eq!(repository_key("git://127.0.0.1:9418/fn.git"), "127.0.0.1/fn");
        assert_ne!(repository_key("https://github.com/octo/fn2"), "github.com/octo/fn");
        assert_eq!(repository_key("ssh://git@[::1]:2222/fn"), "[::1]/fn");
    }
}
