//! Kyma's e2e scenarios (its `tests/serverless` suite), rewritten for the real cluster of
//! e2e_cluster.rs: Functions with no env of their own emit CloudEvents to the publisher proxy and
//! export traces, read env from a ConfigMap and a Secret and a mounted Secret; the Service selects
//! by exactly Kyma's four labels; a build Pod in an Istio-injected namespace opts out of the
//! sidecar.
//!
//! The publisher proxy and the trace collector are a stand-in: a Function in `kyma-system`
//! (built and run by fnbuild like any other) that records every request it gets and answers
//! `GET /seen` with them. Kyma's in-cluster names have no DNS here and there is no kube-proxy, so
//! the controller is given the stand-in Pod's address (`--publisher-proxy-address`,
//! `--trace-collector-endpoint`); that traffic goes from Pod to Pod on the node's Docker bridge.
//! The test itself talks to Pods only through `kubectl port-forward` on 127.0.0.1.

use super::*;

pub const PROXY_NS: &str = "kyma-system";
const PROXY: &str = "publisher-proxy";

/// The stand-in. Its own PUBLISHER_PROXY_ADDRESS and TRACE_COLLECTOR_ENDPOINT win over the
/// controller's: it does not trace its own requests to itself (its spans go to a closed port on
/// its own loopback), nor roll when the controller is given its address. (Not empty values: this
/// cluster's API server, built from Debian's source package, refuses an empty string in any
/// custom resource field as "null".)
fn proxy_fn() -> Value {
    json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": PROXY, "namespace": PROXY_NS},
        "spec": {
            "runtime": "nodejs20",
            "source": {"inline": {"source": r#"const seen = [];
module.exports = { main: function (event, context) {
  const req = event.extensions.request;
  const path = req.url.split('?')[0];
  if (path === '/seen') return JSON.stringify(seen);
  const data = event.data && typeof event.data === 'object' && !Buffer.isBuffer(event.data) ? event.data : null;
  seen.push({ path, method: req.method, headers: req.headers, ceType: event['ce-type'] || null, data });
  return 'recorded';
} };
"#}},
            "env": [{"name": "PUBLISHER_PROXY_ADDRESS", "value": "http://127.0.0.1:1/publish"},
                    {"name": "TRACE_COLLECTOR_ENDPOINT", "value": "http://127.0.0.1:1/v1/traces"}]
        }
    })
}

/// Deploys the stand-in (with the process controller still running) and returns its Pod's IP.
/// The namespace gets no registry Secret of its own: the controller copies serverless-system's.
pub fn start_proxy_stand_in(c: &Cluster, registry: &str) -> String {
    c.namespace(PROXY_NS, json!({}));
    let (took, _) = deploy_new(c, &proxy_fn(), "recorded", registry);
    log(format!(
        "{PROXY_NS}/{PROXY} (the stand-in): apply → first 200 in {}",
        secs(took)
    ));
    let copy = c.get(&["secret", "-n", PROXY_NS, "serverless-registry-config-default"]);
    assert_eq!(
        copy["metadata"]["labels"]["serverless.kyma-project.io/managed-by"], "function-controller",
        "the registry Secret was copied from serverless-system"
    );
    let pods = ready_pods(c, PROXY_NS, PROXY);
    let pod = c.get(&["pod", "-n", PROXY_NS, &pods[0].0]);
    pod["status"]["podIP"]
        .as_str()
        .expect("the stand-in's Pod IP")
        .to_string()
}

/// What the stand-in has recorded.
fn seen(c: &Cluster) -> Vec<Value> {
    let pods = ready_pods(c, PROXY_NS, PROXY);
    let Some((pod, _)) = pods.first() else {
        return Vec::new();
    };
    let Some((_pf, port)) = port_forward(c, PROXY_NS, pod) else {
        return Vec::new();
    };
    let url = format!("http://127.0.0.1:{port}/seen");
    for _ in 0..40 {
        if let Ok((200, _, body)) = http_request_once("GET", &url, &[], b"", Duration::from_secs(2)) {
            return serde_json::from_str(&body).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Vec::new()
}

/// The scenarios, with the controller given the stand-in's address.
pub fn kyma_scenarios(c: &Cluster, registry: &str) {
    let ns = format!("e2e-kyma-{}", std::process::id());
    // Istio's label: a sidecar (were Istio installed) would keep a build Job from completing.
    c.namespace(&ns, json!({"istio-injection": "enabled"}));
    c.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "e2e-config", "namespace": ns}, "data": {"greeting": "from a ConfigMap"}}));
    c.apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "e2e-secret", "namespace": ns},
        "stringData": {"token": "from a Secret", "password": "from a mounted Secret"}}));

    // Kyma's e2e "emitter": no PUBLISHER_PROXY_ADDRESS or TRACE_COLLECTOR_ENDPOINT of its own.
    let name = "kyma-e2e";
    let f = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "nodejs24",
            "source": {"inline": {"source": r#"const http = require('http');
const fs = require('fs');
function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); }).on('error', reject);
  });
}
module.exports = { main: async function (event, context) {
  const proxy = new URL(process.env.PUBLISHER_PROXY_ADDRESS);
  await event.emitCloudEvent('sap.kyma.custom.e2e.order.created.v1', 'kyma-e2e', { orderId: 7 });
  const outgoing = await get(`http://${proxy.host}/outgoing`);
  return JSON.stringify({ configMap: process.env.FROM_CONFIGMAP, secret: process.env.FROM_SECRET,
    mounted: fs.readFileSync('/etc/e2e-secret/password', 'utf8'), outgoing });
} };
"#}},
            "env": [
                {"name": "FROM_CONFIGMAP", "valueFrom": {"configMapKeyRef": {"name": "e2e-config", "key": "greeting"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "e2e-secret", "key": "token"}}}
            ],
            "secretMounts": [{"secretName": "e2e-secret", "mountPath": "/etc/e2e-secret"}]
        }
    });
    // (The whole answer: JSON.stringify keeps the order of the keys.)
    let want =
        r#"{"configMap":"from a ConfigMap","secret":"from a Secret","mounted":"from a mounted Secret","outgoing":200}"#;
    let (took, _) = deploy_new(c, &f, want, registry);
    log(format!(
        "{ns}/{name}: apply → first 200 in {} (event, outgoing call, env, mount)",
        secs(took)
    ));
    let pods = ready_pods(c, &ns, name);
    let (_, body) = http_get_pod(c, &ns, &pods[0].0).expect("an answer");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer["configMap"], "from a ConfigMap");
    assert_eq!(answer["secret"], "from a Secret");
    assert_eq!(answer["mounted"], "from a mounted Secret");
    assert_eq!(answer["outgoing"], 200);

    // The CloudEvent reached the publisher proxy; the outgoing call carried the trace context,
    // W3C and B3; spans were exported to the collector.
    let seen = wait_for(
        "the event, the outgoing call and a span export at the stand-in",
        Duration::from_secs(30),
        || {
            let s = seen(c);
            let has = |p: &str| s.iter().any(|r| r["path"] == p);
            (has("/publish") && has("/outgoing") && has("/v1/traces")).then_some(s)
        },
    );
    let event = seen.iter().find(|r| r["path"] == "/publish").unwrap();
    assert_eq!(event["method"], "POST");
    assert_eq!(event["ceType"], "sap.kyma.custom.e2e.order.created.v1", "{event}");
    assert_eq!(event["data"]["orderId"], 7, "{event}");
    let outgoing = seen.iter().find(|r| r["path"] == "/outgoing").unwrap();
    let h = &outgoing["headers"];
    for header in ["traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"] {
        assert!(h[header].is_string(), "{header} on the outgoing call: {h}");
    }
    let traceparent = h["traceparent"].as_str().unwrap();
    assert!(
        traceparent.contains(h["x-b3-traceid"].as_str().unwrap()),
        "one trace, two formats: {traceparent} {h}"
    );

    // The Service selects the Pods by exactly Kyma's four labels.
    let svc = c.get(&["service", "-n", &ns, name]);
    let uid = function(c, &ns, name)["metadata"]["uid"].clone();
    assert_eq!(
        svc["spec"]["selector"],
        json!({"serverless.kyma-project.io/function-name": name,
               "serverless.kyma-project.io/managed-by": "function-controller",
               "serverless.kyma-project.io/resource": "deployment",
               "serverless.kyma-project.io/uuid": uid})
    );
    // The build Pod opted out of Istio's sidecar.
    let builds = c.get(&["pods", "-n", &ns, "-l", &format!("{FN_LABEL}={name},job-name")]);
    let build_pod = builds["items"].as_array().unwrap().first().expect("the build Pod");
    assert_eq!(
        build_pod["metadata"]["annotations"]["sidecar.istio.io/inject"], "false",
        "{}",
        build_pod["metadata"]
    );
}

fn push_version(work: &std::path::Path, version: u32) {
    std::fs::create_dir_all(work.join("gitops")).unwrap();
    std::fs::write(
        work.join("gitops/handler.js"),
        format!("module.exports = {{ main: () => 'GITOPS {version}' }};\n"),
    )
    .unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", &format!("v{version}")]);
    git(work, &["push", "-q", "origin", "main"]);
}

/// The controller Deployment's `--git-poll-interval` in step 7.
pub const GIT_POLL_SECONDS: u64 = 15;

/// GitHub's push event for `repo_url`, signed with `secret`, posted to the controller's git
/// webhook (`git_webhook`: `http://127.0.0.1:PORT`) for namespace `ns`.
fn post_push(git_webhook: &str, ns: &str, repo_url: &str, secret: &[u8]) -> (u16, String) {
    let (body, sig) = github_push_event(repo_url, secret);
    let r = http_request_once(
        "POST",
        &format!("{git_webhook}/git-webhook/{ns}"),
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .expect("the controller's git webhook answers");
    (r.0, r.2)
}

/// Kyma's gitops scenario: a Function from a repository (here `git daemon` on the node's
/// loopback address, which the controller and build Pods reach on the node's network) answers
/// "GITOPS 1"; after a push and GitHub's signed push event it answers "GITOPS 2" (an event
/// signed with another secret changes nothing), and so for 3 and 4; after another push, with no
/// event, "GITOPS 5" by polling alone (every [`GIT_POLL_SECONDS`]).
pub fn gitops(c: &Cluster, registry: &str, git_webhook: &str, metrics: &str) {
    let ns = format!("e2e-gitops-{}", std::process::id());
    c.namespace(&ns, json!({}));
    c.apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fnbuild-git-webhook", "namespace": ns},
        "stringData": {"token": "e2e-webhook-secret"}}));
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = git_bare_and_work(dir.path());
    push_version(&work, 1);
    let daemon = GitDaemon::start(dir.path());
    let name = "gitops";
    let url = daemon.url("fn.git");
    // Small requests (the node's 2 CPUs are mostly requested by the Functions before) and a
    // limit of one CPU: XS's 150m would make the figures Node's start under CFS throttling.
    let resources = json!({"function": {"resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}},
        "build": {"profile": "local-dev"}});
    let f = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"runtime": "nodejs24", "source": {"gitRepository": {
            "url": url, "baseDir": "/gitops", "reference": "main"}},
            "resourceConfiguration": resources}
    });
    // The same Function inline first, in the same namespace and resources: the figure to compare.
    let inline = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "inline-twin", "namespace": ns},
        "spec": {"runtime": "nodejs24", "source": {"inline": {
            "source": "module.exports = { main: () => 'INLINE 1' };\n"}},
            "resourceConfiguration": resources}
    });
    let (inline_took, _) = deploy_new(c, &inline, "INLINE 1", registry);
    c.kubectl_ok(&["delete", "function", "-n", &ns, "inline-twin"], None);
    let (took, _) = deploy_new(c, &f, "GITOPS 1", registry);
    log(format!(
        "{ns}/{name}: apply of a git Function → first 200 in {} (the same Function inline, just before: {})",
        secs(took),
        secs(inline_took)
    ));
    let refused = |m: &str| {
        let r = http_request_once("GET", &format!("{m}/metrics"), &[], b"", Duration::from_secs(5)).unwrap();
        fnbuild_controller::metrics::sample(&r.2, "fnbuild_git_webhook_refused_total").unwrap()
    };

    // A push, and its event as GitHub sends it; one signed with another secret first. Three
    // times, for a median.
    let mut by_event = Vec::new();
    for version in 2..=4 {
        push_version(&work, version);
        if version == 2 {
            let before = refused(metrics);
            let (status, body) = post_push(git_webhook, &ns, &url, b"not the secret");
            assert_eq!(status, 401, "{body}");
            assert_eq!(refused(metrics), before + 1.0);
        }
        let t = Instant::now();
        let (status, body) = post_push(git_webhook, &ns, &url, b"e2e-webhook-secret");
        assert_eq!((status, body.as_str()), (200, r#"{"rechecked":["gitops"]}"#));
        by_event.push(wait_answer(c, &ns, name, &format!("GITOPS {version}"), t));
    }
    log(format!(
        "{ns}/{name}: git push → new answer: median {} of 3 ({}) (the push event)",
        secs(median(&by_event)),
        by_event.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(" ")
    ));

    // A push and no event: polling alone.
    let t = Instant::now();
    push_version(&work, 5);
    let took = wait_answer(c, &ns, name, "GITOPS 5", t);
    log(format!(
        "{ns}/{name}: git push → new answer in {} (by polling every {GIT_POLL_SECONDS} s)",
        secs(took)
    ));
    let st = function(c, &ns, name)["status"].clone();
    assert_eq!(
        st["gitRepository"]["commit"],
        git(&work, &["rev-parse", "HEAD"]).as_str(),
        "{st}"
    );

    // A git Function whose dependencies name a package: the first build (fetch and build, no
    // install step) says an install is needed, and the controller builds again with one.
    std::fs::create_dir_all(work.join("py")).unwrap();
    std::fs::write(
        work.join("py/handler.py"),
        "import six\n\ndef main(event, context):\n    return 'GITOPS py six ' + six.__version__\n",
    )
    .unwrap();
    std::fs::write(work.join("py/requirements.txt"), "six==1.16.0\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "py"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let py = json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "gitops-py", "namespace": ns},
        "spec": {"runtime": "python312", "source": {"gitRepository": {
            "url": url, "baseDir": "py", "reference": "main"}},
            "resourceConfiguration": {"function": {"profile": "XS"}, "build": {"profile": "local-dev"}}}
    });
    let (took, _) = deploy_new(c, &py, "GITOPS py six 1.16.0", registry);
    log(format!(
        "{ns}/gitops-py: apply of a git Function with a dependency → first 200 in {} (a build without an install step, then one with it)",
        secs(took)
    ));
    let jobs = jobs_of(c, &ns, "gitops-py");
    assert_eq!(jobs.len(), 1, "the first Job removed: {jobs:?}");
    let job = c.get(&["job", "-n", &ns, jobs.iter().next().unwrap()]);
    let steps: Vec<&str> = job["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["fetch", "prepare", "install"], "{job}");
    assert_eq!(
        job["metadata"]["labels"]["serverless.kyma-project.io/build-attempt"],
        "2"
    );
    let f = function(c, &ns, "gitops-py");
    assert!(all_true(&f), "{}", f["status"]);
}
