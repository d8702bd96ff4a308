//! Functions from git (issue 20) against the real API server, run by
//! `controller_against_a_real_api_server`: the controller resolves the reference with
//! `git ls-remote` against `git daemon` on 127.0.0.1, builds the commit it names, and builds
//! again when a push moves the branch (here within its 1 s poll interval).

use super::*;
use crate::common::{git, git_bare_and_work, GitDaemon};

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

pub async fn functions_from_git(client: &Client) {
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

    // A push: the next poll resolves the new commit, which is built.
    let c2 = commit(&work, "2");
    wait_for("gitops: the pushed commit built", || async {
        let f = function(client, ns, "gitops").await;
        let seen = f.status.as_ref()?.commit.as_deref() == Some(c2.as_str());
        (seen && fetched_commits(client, ns).await.contains(&c2)).then_some(())
    })
    .await;

    // What cannot be resolved is said in the status, naming the repository; nothing is built.
    let before = jobs_of(client, ns).await.len();
    for (name, reference, auth, says) in [
        ("no-such-ref", "nope", None, format!("{url}: no branch or tag nope")),
        (
            "no-secret",
            "main",
            Some("missing-creds"),
            format!("the git auth Secret missing-creds is not in namespace {ns}"),
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
