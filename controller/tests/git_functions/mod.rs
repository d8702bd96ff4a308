//! Functions from git (issue 20) against the real API server, run by
//! `controller_against_a_real_api_server`: the controller resolves the reference with
//! `git ls-remote` against `git daemon` on 127.0.0.1, builds the commit it names, and builds
//! again after a push when a signed push event or the recheck annotation says so (its poll
//! interval is an hour here, so nothing else can).

use super::*;
use crate::common::{git, git_bare_and_work, github_push_event, sshd, GitDaemon};

fn commit(work: &std::path::Path, version: &str) -> String {
    std::fs::create_dir_all(work.join("hello")).unwrap();
    std::fs::write(
        work.join("hello/handler.js"),
        format!("module.exports = {{ main: () => 'GITOPS {version}' }};\n"),
    )
    .unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", version]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// The fetch step's `--git-ref` of each of the Function's build Jobs.
async fn fetched_commits(client: &Client, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for j in jobs_of(client, ns).await {
        let pod = j.spec.unwrap().template.spec.unwrap();
        let fetch = pod
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == "fetch");
        let args = fetch.and_then(|c| c.args).unwrap_or_default();
        if let Some(i) = args.iter().position(|a| a == "--git-ref") {
            out.push(args[i + 1].clone());
        }
    }
    out
}

/// GitHub's push event for `repo_url`, signed with `secret`, posted to the controller's git
/// webhook for namespace `ns`: the status and body of the answer.
async fn post_push(controller: &Controller, ns: &str, repo_url: &str, secret: &[u8]) -> (u16, String) {
    let (body, sig) = github_push_event(repo_url, secret);
    let r = reqwest::Client::new()
        .post(format!("{}/git-webhook/{ns}", controller.git_webhook))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn functions_from_git(client: &Client, controller: &Controller) {
    let ns = &run_ns("ctl-git");
    namespace(client, ns).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = git_bare_and_work(dir.path());
    let c1 = commit(&work, "1");
    let daemon = GitDaemon::start(dir.path());
    let url = daemon.url("fn.git");
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    let gitops = |name: &str, reference: &str, auth: Option<&str>| {
        let mut f = json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"runtime": "nodejs24", "source": {"gitRepository": {
                "url": url, "baseDir": "/hello", "reference": reference}}}});
        if let Some(secret) = auth {
            f["spec"]["source"]["gitRepository"]["auth"] = json!({"type": "basic", "secretName": secret});
        }
        serde_json::from_value::<Function>(f).unwrap()
    };
    api.create(&PostParams::default(), &gitops("gitops", "main", None))
        .await
        .unwrap();

    // The branch's commit, resolved by the controller, in status and in the build Job.
    let f = wait_for("gitops: the commit of main in status", || async {
        let f = function(client, ns, "gitops").await;
        (f.status.as_ref()?.commit.as_deref() == Some(c1.as_str())).then_some(f)
    })
    .await;
    let (st, reason, msg) = condition(&f, "ConfigurationReady").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "SourceUpdated"), "{msg}");
    assert!(msg.contains(&url) && msg.contains(&c1), "{msg}");
    let s = f.status.unwrap();
    let repo = s.git_repository.unwrap();
    assert_eq!((repo.url.as_str(), repo.commit.as_str()), (url.as_str(), c1.as_str()));
    assert_eq!(
        (s.base_dir.as_deref(), s.reference.as_deref()),
        (Some("/hello"), Some("main"))
    );
    wait_for("gitops: a build Job fetching that commit", || async {
        fetched_commits(client, ns).await.contains(&c1).then_some(())
    })
    .await;

    // A push. Events that are not signed with the namespace's webhook secret do nothing: none
    // while the namespace has no Secret, none signed with another secret. (The poll interval is
    // an hour: after 3 s the status still shows the old commit.)
    let c2 = commit(&work, "2");
    let refused_before = controller.metric("fnbuild_git_webhook_refused_total").await;
    let (status, body) = post_push(controller, ns, &url, b"s3cret").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no Secret fnbuild-git-webhook"), "{body}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fnbuild-git-webhook", "namespace": ns},
        "stringData": {"token": "s3cret\n"}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(secret).unwrap())
        .await
        .unwrap();
    // (The receiver knows the Secret once its watch has brought it: a moment.)
    let mut posts = 1.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        posts += 1.0;
        let (status, body) = post_push(controller, ns, &url, b"not the secret").await;
        assert_eq!(status, 401, "{body}");
        if body.contains("X-Hub-Signature-256 does not match") {
            break body;
        }
        assert!(Instant::now() < deadline, "the receiver never saw the Secret: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        body.ends_with("forged or signed with another secret, ignored"),
        "{body}"
    );
    assert_eq!(
        controller.metric("fnbuild_git_webhook_refused_total").await,
        refused_before + posts
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let f = function(client, ns, "gitops").await;
    assert_eq!(
        f.status.unwrap().commit.as_deref(),
        Some(c1.as_str()),
        "nothing re-checked"
    );

    // Signed with the Secret's token (its trailing newline dropped): the Functions on that
    // repository, in that namespace, are re-checked, and the new commit is built.
    let (status, body) = post_push(controller, ns, &url, b"s3cret").await;
    assert_eq!((status, body.as_str()), (200, r#"{"rechecked":["gitops"]}"#));
    wait_for("gitops: the pushed commit built after the push event", || async {
        let f = function(client, ns, "gitops").await;
        let seen = f.status.as_ref()?.commit.as_deref() == Some(c2.as_str());
        (seen && fetched_commits(client, ns).await.contains(&c2)).then_some(())
    })
    .await;
    // Another repository's push re-checks nothing.
    let other = url.replace("fn.git", "other.git");
    let (status, body) = post_push(controller, ns, &other, b"s3cret").await;
    assert_eq!((status, body.as_str()), (200, r#"{"rechecked":[]}"#));

    // The recheck annotation: a new value, and the reference is resolved again.
    let c3 = commit(&work, "3");
    let patch = json!({"metadata": {"annotations": {"fnbuild.dev/recheck": "1"}}});
    api.patch("gitops", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("gitops: the commit seen after the recheck annotation", || async {
        let f = function(client, ns, "gitops").await;
        (f.status.as_ref()?.commit.as_deref() == Some(c3.as_str())).then_some(())
    })
    .await;

    // Over SSH with a key (a kubernetes.io/ssh-auth Secret): the host key is trusted only when
    // the Secret carries it (`known_hosts`).
    let sshd = sshd(dir.path());
    let ssh_secret = |name: &str, known_hosts: &str| {
        let mut data = json!({"ssh-privatekey": std::fs::read_to_string(sshd.dir.join("client")).unwrap()});
        if !known_hosts.is_empty() {
            data["known_hosts"] = json!(known_hosts);
        }
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/ssh-auth",
            "metadata": {"name": name, "namespace": ns}, "stringData": data})
    };
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns);
    let known = std::fs::read_to_string(sshd.dir.join("known_hosts")).unwrap();
    for (name, known_hosts) in [("ssh-pinned", known.as_str()), ("ssh-unpinned", "")] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(ssh_secret(name, known_hosts)).unwrap(),
            )
            .await
            .unwrap();
        let mut f = gitops(name, "main", None);
        f.spec.source.git_repository.as_mut().unwrap().url = sshd.url.clone();
        f.spec.source.git_repository.as_mut().unwrap().auth = Some(fnbuild_controller::types::RepositoryAuth {
            type_: "key".into(),
            secret_name: name.into(),
        });
        api.create(&PostParams::default(), &f).await.unwrap();
    }
    wait_for("ssh-pinned: the commit over SSH", || async {
        let f = function(client, ns, "ssh-pinned").await;
        (f.status.as_ref()?.commit.as_deref() == Some(c3.as_str())).then_some(())
    })
    .await;
    let f = wait_for("ssh-unpinned: SourceUpdateFailed", || async {
        let f = function(client, ns, "ssh-unpinned").await;
        (condition(&f, "ConfigurationReady")?.1 == "SourceUpdateFailed").then_some(f)
    })
    .await;
    let msg = condition(&f, "ConfigurationReady").unwrap().2;
    assert!(
        msg.contains("its SSH host key is not known (give the auth Secret the host's key as known_hosts)"),
        "{msg}"
    );
    assert!(!msg.contains("BEGIN OPENSSH"), "{msg}");
    // Its build Job would hold a build slot for good (this cluster runs no Job): gone.
    let dp = kube::api::DeleteParams::background();
    api.delete("ssh-pinned", &dp).await.unwrap();
    for j in jobs_of(client, ns).await {
        let name = j.metadata.name.unwrap_or_default();
        if name.starts_with("ssh-pinned-") {
            Api::<Job>::namespaced(client.clone(), ns)
                .delete(&name, &dp)
                .await
                .unwrap();
        }
    }

    // What cannot be resolved is said in the status, naming the repository; nothing is built.
    let before = jobs_of(client, ns).await.len();
    for (name, reference, auth, says) in [
        (
            "no-such-ref",
            "nope",
            None,
            format!("Git repository: {url} source check failed: no branch or tag nope"),
        ),
        (
            "no-secret",
            "main",
            Some("missing-creds"),
            format!(
                "Getting git authorization data failed: the git auth Secret missing-creds is not in namespace {ns}"
            ),
        ),
    ] {
        api.create(&PostParams::default(), &gitops(name, reference, auth))
            .await
            .unwrap();
        let f = wait_for(&format!("{name}: SourceUpdateFailed"), || async {
            let f = function(client, ns, name).await;
            (condition(&f, "ConfigurationReady")?.1 == "SourceUpdateFailed").then_some(f)
        })
        .await;
        let (st, _, msg) = condition(&f, "ConfigurationReady").unwrap();
        assert_eq!(st, "False");
        assert!(msg.contains(&says), "{name}: {msg}");
    }
    assert_eq!(
        jobs_of(client, ns).await.len(),
        before,
        "no build for a source that cannot be resolved"
    );
}

/// The controller's cost of one check of 100 Functions from git on 10 repositories: a push to
/// each repository and its push event; every Function's status shows the new commit. Asking the
/// servers is shared: one `git ls-remote` per repository, not per Function. Run last (its
/// builds keep the build slots: the test cluster runs no Job).
pub async fn checks_at_scale(client: &Client, controller: &Controller) {
    const REPOS: usize = 10;
    const PER_REPO: usize = 10;
    let ns = &run_ns("ctl-git-scale");
    namespace(client, ns).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fnbuild-git-webhook", "namespace": ns},
        "stringData": {"token": "s3cret"}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(secret).unwrap())
        .await
        .unwrap();
    // One work tree pushed to ten repositories.
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = git_bare_and_work(dir.path());
    let repos: Vec<String> = (0..REPOS).map(|i| format!("r{i}.git")).collect();
    for r in &repos {
        git(dir.path(), &["init", "-q", "--bare", r]);
    }
    let push_all = |work: &std::path::Path, version: &str| {
        let c = commit(work, version);
        for r in &repos {
            let bare = dir.path().join(r);
            git(work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
        }
        c
    };
    let c1 = push_all(&work, "1");
    let daemon = GitDaemon::start(dir.path());
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    for (i, r) in repos.iter().enumerate() {
        for j in 0..PER_REPO {
            let f = json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
                "metadata": {"name": format!("f{i}-{j}"), "namespace": ns},
                "spec": {"runtime": "nodejs24", "source": {"gitRepository": {
                    "url": daemon.url(r), "baseDir": "/hello", "reference": "main"}}}});
            api.create(&PostParams::default(), &serde_json::from_value(f).unwrap())
                .await
                .unwrap();
        }
    }
    let all_at = |c: String| {
        let api = api.clone();
        async move {
            let fs = api.list(&ListParams::default()).await.unwrap().items;
            let at = fs
                .iter()
                .filter(|f| f.status.as_ref().and_then(|s| s.commit.as_deref()) == Some(c.as_str()))
                .count();
            (at == REPOS * PER_REPO).then_some(())
        }
    };
    wait_for("100 Functions from git: the first commit in status", || {
        all_at(c1.clone())
    })
    .await;

    let c2 = push_all(&work, "2");
    let checks0 = controller.metric("fnbuild_git_checks_total").await;
    let cpu0 = controller.cpu();
    let t = Instant::now();
    for r in &repos {
        let (status, body) = post_push(controller, ns, &daemon.url(r), b"s3cret").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.matches("\"f").count(), PER_REPO, "{body}");
    }
    wait_for("100 Functions from git: the pushed commit in status", || {
        all_at(c2.clone())
    })
    .await;
    let took = t.elapsed();
    let cpu = controller.cpu() - cpu0;
    let checks = controller.metric("fnbuild_git_checks_total").await - checks0;
    eprintln!(
        "FIGURE git check at scale: {} Functions on {REPOS} repositories re-checked by {REPOS} push events: every status at the new commit in {:.2} s; {checks} git ls-remote runs; controller CPU {:.0} ms with its git children ({:.1} ms per Function; 10 ms clock ticks; includes the status writes and the build Jobs' bookkeeping)",
        REPOS * PER_REPO,
        took.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0 / (REPOS * PER_REPO) as f64,
    );
    // Shared: one per repository (the Functions on it wait for the first one's answer; one
    // re-checked more than 2 s after it would ask again), never one per Function.
    assert!(
        checks >= REPOS as f64 && checks <= (2 * REPOS) as f64,
        "{checks} git ls-remote runs for {REPOS} repositories"
    );
}
