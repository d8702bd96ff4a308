//! The Function controller against a real Kubernetes 1.20 API server and etcd
//! (`tests/cluster/up --apiserver-only`), envtest-style: there is no kubelet and no
//! kube-controller-manager, so this test plays their part by writing Job, Pod and Deployment
//! status. The controller runs as the real binary (`fnbuild-controller run`), its webhooks are called
//! by the API server over HTTPS, and `fnbuild-controller manifests` is applied with kubectl.
//!
//! Environment: FNBUILD_CTL_CLUSTER_DIR (default /tmp/fnbuild-ctl-cluster) and
//! FNBUILD_CTL_APISERVER_PORT / FNBUILD_CTL_ETCD_PORT (27443 / 24379) choose the test cluster; a
//! cluster this test started is stopped at the end unless FNBUILD_KEEP_CLUSTER=1.
//! (Over 600 lines: one API server started once for every scenario; the scenarios of issues
//! 19 and 20 are in kyma_platform/ and git_functions/.)

#[path = "../../tests/common/mod.rs"]
mod common;
mod git_functions;
mod kyma_platform;
mod objects;

use common::{assert_service_range_refused, free_port, tls_pair};

use fnbuild_controller::desired::{self, LABEL_IMAGE_TAG};
use fnbuild_controller::metrics::sample;
use fnbuild_controller::settings::Settings;
use fnbuild_controller::types::Function;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    common::repo_root()
}

/// The apiserver-only test cluster: started by `tests/cluster/up` unless it already runs.
struct Cluster {
    dir: PathBuf,
    env: Vec<(String, String)>,
    started_here: bool,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = std::env::var("FNBUILD_CTL_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/fnbuild-ctl-cluster".into());
        let env = vec![
            ("FNBUILD_CLUSTER_DIR".to_string(), dir.clone()),
            (
                "FNBUILD_APISERVER_PORT".into(),
                std::env::var("FNBUILD_CTL_APISERVER_PORT").unwrap_or_else(|_| "27443".into()),
            ),
            (
                "FNBUILD_ETCD_PORT".into(),
                std::env::var("FNBUILD_CTL_ETCD_PORT").unwrap_or_else(|_| "24379".into()),
            ),
            (
                "FNBUILD_ETCD_PEER_PORT".into(),
                std::env::var("FNBUILD_CTL_ETCD_PEER_PORT").unwrap_or_else(|_| "24380".into()),
            ),
        ];
        let dir = PathBuf::from(dir);
        let was_up = dir.join("mode").exists()
            && Command::new(dir.join("bin/kubectl"))
                .env("KUBECONFIG", dir.join("kubeconfig"))
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let out = Command::new(repo().join("tests/cluster/up"))
            .arg("--apiserver-only")
            .envs(env.iter().cloned())
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/cluster/up");
        assert!(out.status.success(), "tests/cluster/up --apiserver-only failed");
        // Nothing here may reach the Service range: the machine refuses it (no kube-proxy).
        assert_service_range_refused();
        Cluster {
            dir,
            env,
            started_here: !was_up,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        common::kubectl(&self.dir, args, stdin)
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        common::kubectl_ok(&self.dir, args, stdin)
    }

    async fn client(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here && std::env::var("FNBUILD_KEEP_CLUSTER").as_deref() != Ok("1") {
            let _ = Command::new(repo().join("tests/cluster/down"))
                .envs(self.env.iter().cloned())
                .status();
        }
    }
}

/// The controller binary, stopped (by its pid) when dropped.
struct Controller {
    child: Child,
    kubeconfig: PathBuf,
    metrics: String,
    /// Where git hosts post push events: `http://127.0.0.1:PORT`.
    git_webhook: String,
    log: PathBuf,
}

impl Controller {
    fn start(
        cluster: &Cluster,
        webhook_port: u16,
        registry: &str,
        tls: &(PathBuf, PathBuf),
        log: PathBuf,
    ) -> Controller {
        let metrics_port = free_port();
        let git_webhook_port = free_port();
        // The controller acts as its ServiceAccount (impersonated), so that the manifests'
        // least-privilege ClusterRole is what it gets: a missing permission fails this test.
        let kubeconfig = log.with_file_name("controller.kubeconfig");
        let kc = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
        let (before, after) = kc.split_once("  user:\n").expect("a user in the kubeconfig");
        let sa = "    as: system:serviceaccount:serverless-system:fnbuild-controller\n    as-groups:\n    - system:serviceaccounts\n    - system:serviceaccounts:serverless-system\n    - system:authenticated\n";
        std::fs::write(&kubeconfig, format!("{before}  user:\n{sa}{after}")).unwrap();
        // FNBUILD_CONTROLLER_BIN: another build of fnbuild-controller to run (e.g. the
        // release build, for the CPU figure).
        let bin = std::env::var("FNBUILD_CONTROLLER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fnbuild-controller").to_string());
        let child = Command::new(bin)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "fnbuild=info,fnbuild_controller=info,warn")
            .args([
                "run",
                "--builder-image=fnbuild-test/builder:1",
                &format!("--registry-push-address={registry}"),
                "--registry-pull-address=localhost:5000",
                "--build-retry-delay=2",
                // Functions from git see a push only through the webhook or the recheck
                // annotation here (polling alone is shown by the e2e test).
                "--git-poll-interval=3600",
                &format!("--git-webhook-addr=127.0.0.1:{git_webhook_port}"),
                "--max-concurrent-builds=4",
                &format!("--metrics-addr=127.0.0.1:{metrics_port}"),
                &format!("--webhook-addr=127.0.0.1:{webhook_port}"),
                &format!("--tls-cert={}", tls.0.display()),
                &format!("--tls-key={}", tls.1.display()),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start fnbuild-controller");
        Controller {
            child,
            kubeconfig,
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            git_webhook: format!("http://127.0.0.1:{git_webhook_port}"),
            log,
        }
    }

    async fn scrape(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        sample(&self.scrape().await, name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// User and system CPU time of the controller process so far, with that of the children it
    /// waited for (its `git ls-remote` runs).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after_comm.split(' ').collect();
        let ticks: u64 = f[11..15].iter().map(|t| t.parse::<u64>().unwrap()).sum();
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- controller log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Poll `f` until it gives `Some`, or fail after `TIMEOUT` saying what was awaited.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > TIMEOUT {
            panic!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(f: &Function, type_: &str) -> Option<(String, String, String)> {
    let c = f.status.as_ref()?.condition(type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

/// A registry that has every tag of repositories starting with `ctl-skip` and nothing else.
/// Repositories the fake registry has the image in (besides `ctl-skip*`), as a build's push
/// would leave it.
static PUSHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn fake_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(fnbuild_controller::http::serve(listener, None, |req| async move {
        use fnbuild_controller::http::Resp;
        let p = req.path.as_str();
        if p == "/v2/" {
            return Resp::json(b"{}".to_vec());
        }
        let pushed = PUSHED
            .lock()
            .unwrap()
            .iter()
            .any(|r| p.starts_with(&format!("/v2/{r}/manifests/")));
        if (p.starts_with("/v2/ctl-skip") || pushed) && p.contains("/manifests/") {
            return Resp {
                status: hyper::StatusCode::OK,
                content_type: "application/vnd.oci.image.manifest.v1+json",
                body: MANIFEST.as_bytes().to_vec(),
            };
        }
        Resp {
            status: hyper::StatusCode::NOT_FOUND,
            content_type: "application/json",
            body: br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.to_vec(),
        }
    }));
    addr
}

fn now() -> String {
    fnbuild_controller::types::now_rfc3339()
}

/// Play the Job controller and kubelet: a finished Pod with `message` as its termination
/// message, then the Job's status.
async fn finish_job(client: &Client, ns: &str, job: &str, succeeded: bool, message: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"job-name": job}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false, "containers": [{"name": "build", "image": "fnbuild-test/builder:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let t = now();
    let (code, reason, phase) = if succeeded {
        (0, "Completed", "Succeeded")
    } else {
        (1, "Error", "Failed")
    };
    let status = json!({"status": {"phase": phase, "containerStatuses": [{
        "name": "build", "ready": false, "restartCount": 0, "image": "fnbuild-test/builder:1", "imageID": "",
        "state": {"terminated": {"exitCode": code, "reason": reason, "message": message, "startedAt": t, "finishedAt": t}}
    }]}});
    pods.patch_status(&format!("{job}-abcde"), &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let cond = if succeeded { "Complete" } else { "Failed" };
    let mut st = json!({"startTime": t, "conditions": [{"type": cond, "status": "True", "lastProbeTime": t, "lastTransitionTime": t}]});
    if succeeded {
        st["succeeded"] = json!(1);
        st["completionTime"] = json!(t);
    } else {
        st["failed"] = json!(1);
        st["conditions"][0]["reason"] = json!("BackoffLimitExceeded");
    }
    jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(&json!({ "status": st })))
        .await
        .unwrap();
}

/// Play the Job controller and kubelet for a build Pod whose `install` init container failed with
/// `message` (`prepare` succeeded; `build` never started), then the Job's failed status.
async fn fail_job_in_install_step(client: &Client, ns: &str, job: &str, message: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("{job}-fghij");
    let image = "fnbuild-test/builder:1";
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"job-name": job}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                 "initContainers": [{"name": "prepare", "image": image}, {"name": "install", "image": image}],
                 "containers": [{"name": "build", "image": image}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let t = now();
    let terminated = |name: &str, code: i32, reason: &str, message: Option<&str>| {
        let mut st = json!({"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t});
        if let Some(m) = message {
            st["message"] = json!(m);
        }
        json!({"name": name, "ready": false, "restartCount": 0, "image": image, "imageID": "", "state": {"terminated": st}})
    };
    let status = json!({"status": {"phase": "Failed",
        "initContainerStatuses": [terminated("prepare", 0, "Completed", None), terminated("install", 1, "Error", Some(message))],
        "containerStatuses": [{"name": "build", "ready": false, "restartCount": 0, "image": image, "imageID": "",
                               "state": {"waiting": {"reason": "PodInitializing"}}}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let st = json!({"startTime": t, "failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "lastProbeTime": t, "lastTransitionTime": t}]});
    jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(&json!({ "status": st })))
        .await
        .unwrap();
}

/// Play the Deployment controller: the Deployment is rolled out and available.
async fn make_available(client: &Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api.get(name).await.unwrap();
    let n = d.spec.replicas.unwrap_or(1);
    let t = now();
    let st = json!({"status": {
        "observedGeneration": d.metadata.generation, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability.", "lastUpdateTime": t, "lastTransitionTime": t}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
}

async fn jobs_of(client: &Client, ns: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default()).await.unwrap().items
}

async fn function(client: &Client, ns: &str, name: &str) -> Function {
    Api::<Function>::namespaced(client.clone(), ns).get(name).await.unwrap()
}

async fn namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    match api.create(&PostParams::default(), &n).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.is_already_exists() => {}
        Err(e) => panic!("create namespace {ns}: {e}"),
    }
    // Play kube-controller-manager: Pods need the namespace's default ServiceAccount.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.is_already_exists() => {}
        Err(e) => panic!("create the default ServiceAccount in {ns}: {e}"),
    }
}

fn hello(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "nodejs20",
            "source": {"inline": {
                "source": "module.exports = { main: (event, context) => 'hello' }",
                "dependencies": "{\"name\": \"hello\", \"version\": \"1.0.0\", \"dependencies\": {}}"
            }},
            "env": [{"name": "GREETING", "value": "hi"}],
            "scaleConfig": {"minReplicas": 1, "maxReplicas": 3}
        }
    })
}

fn rv<K: kube::Resource>(o: &K) -> String {
    o.meta().resource_version.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_against_a_real_api_server() {
    fnbuild_controller::install_crypto_provider();
    let cluster = Cluster::up();
    let client = cluster.client().await;
    let work = tempfile::tempdir().unwrap();
    let tls = tls_pair(work.path());
    let registry = fake_registry().await;
    let webhook_port = free_port();

    // `fnbuild-controller manifests | kubectl apply -f -`: the webhooks call the controller started below.
    let manifests = Command::new(env!("CARGO_BIN_EXE_fnbuild-controller"))
        .args([
            "manifests",
            // This cluster's API server predates CEL rules in CRDs.
            "--kubernetes-version=1.20",
            &format!("--webhook-url=https://127.0.0.1:{webhook_port}"),
            "--builder-image=fnbuild-test/builder:1",
        ])
        .arg(format!("--tls-cert={}", tls.0.display()))
        .arg(format!("--tls-key={}", tls.1.display()))
        .output()
        .unwrap();
    assert!(
        manifests.status.success(),
        "{}",
        String::from_utf8_lossy(&manifests.stderr)
    );
    let manifests = String::from_utf8(manifests.stdout).unwrap();
    let applied = cluster.kubectl_ok(&["apply", "-f", "-"], Some(&manifests));
    eprintln!("fnbuild-controller manifests | kubectl apply -f -:\n{applied}");
    for what in [
        "customresourcedefinition",
        "clusterrole",
        "deployment.apps/fnbuild-controller",
        "validatingwebhookconfiguration",
    ] {
        assert!(applied.contains(what), "{applied}");
    }
    cluster.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/functions.serverless.kyma-project.io",
        ],
        None,
    );

    leftovers(&client).await;
    let controller = Controller::start(
        &cluster,
        webhook_port,
        &registry,
        &tls,
        work.path().join("controller.log"),
    );
    wait_for("the controller's /healthz", || async {
        reqwest::get(format!("{}/healthz", controller.metrics))
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    wait_for("the webhook server", || async {
        std::net::TcpStream::connect(("127.0.0.1", webhook_port)).ok()
    })
    .await;

    // The controller's identity has what it needs and no more.
    let kc = format!("--kubeconfig={}", controller.kubeconfig.display());
    for (verb, what, want) in [
        ("create", "jobs.batch", "yes"),
        ("patch", "deployments.apps", "yes"),
        ("patch", "functions.serverless.kyma-project.io/status", "yes"),
        ("list", "secrets", "no"),
        ("get", "secrets/serverless-package-registry-config", "yes"),
        // A Function from git names its auth Secret: any, by name (never listed or watched).
        ("get", "secrets/other", "yes"),
        ("watch", "secrets", "no"),
        ("update", "secrets/serverless-registry-config-default", "yes"),
        ("update", "secrets/other", "no"),
        ("delete", "secrets/serverless-registry-config-default", "no"),
        ("create", "pods", "no"),
        ("delete", "functions.serverless.kyma-project.io", "no"),
    ] {
        let out = cluster.kubectl(&[kc.as_str(), "auth", "can-i", verb, what, "-n", "any"], None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, want, "can the controller {verb} {what}?");
    }
    happy_path(&cluster, &client, &controller, &registry).await;
    webhook_and_bypass(&cluster, &client, &controller, &manifests).await;
    kyma_platform::no_spec_drift(&cluster, &client).await;
    kyma_platform::kyma_validation_cases(&cluster, &client).await;
    git_functions::functions_from_git(&client, &controller).await;
    kyma_platform::takeover_from_kyma(&client).await;
    image_already_in_registry(&client).await;
    configmap_refused(&cluster, &client).await;
    push_seen_before_the_job_finishes(&client).await;
    kyma_platform::registry_config_copied(&client, &registry).await;
    desired_objects_pass_server_validation(&cluster);
    // Last: its hundred Functions' builds take the build slots.
    git_functions::checks_at_scale(&client, &controller).await;
    eprintln!("metrics at the end:\n{}", controller.scrape().await);
    drop(controller);
    leftovers(&client).await;
}

/// Namespaces are new in each run: without kube-controller-manager, deleted ones stay Terminating.
fn run_ns(prefix: &str) -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let id = ID.get_or_init(|| {
        format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 0xfffff
        )
    });
    format!("{prefix}-{id}")
}

/// Remove what earlier runs left on a cluster that stayed up (there is no garbage collector
/// without kube-controller-manager), so that their build Jobs do not hold build slots.
async fn leftovers(client: &Client) {
    let dp = kube::api::DeleteParams::background();
    for f in Api::<Function>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let ns = f.namespace().unwrap_or_default();
        if ns.starts_with("ctl-") {
            let _ = Api::<Function>::namespaced(client.clone(), &ns)
                .delete(&f.name_any(), &dp)
                .await;
        }
    }
    let lp = ListParams::default().labels("serverless.kyma-project.io/managed-by=function-controller");
    for j in Api::<Job>::all(client.clone()).list(&lp).await.unwrap().items {
        let ns = j.namespace().unwrap_or_default();
        if ns.starts_with("ctl-") {
            let _ = Api::<Job>::namespaced(client.clone(), &ns)
                .delete(&j.name_any(), &dp)
                .await;
        }
    }
}

async fn happy_path(cluster: &Cluster, client: &Client, controller: &Controller, registry: &str) {
    let ns = &run_ns("ctl-a");
    namespace(client, ns).await;
    let fns: Api<Function> = Api::namespaced(client.clone(), ns);

    // Apply → ConfigMap and Job, timed. The Function's own labels reach everything it owns.
    let mut manifest = hello(ns, "hello");
    manifest["metadata"]["labels"] = json!({"app.example.com/team": "payments"});
    let f: Function = serde_json::from_value(manifest).unwrap();
    let t0 = Instant::now();
    let created = fns.create(&PostParams::default(), &f).await.unwrap();
    let job = wait_for("the build Job", || async {
        let j = jobs_of(client, ns).await;
        j.into_iter().next()
    })
    .await;
    let to_job = t0.elapsed();
    eprintln!(
        "FIGURE apply-to-Job: {:.1} ms (Function created through the validating webhook, Job seen by polling every 20 ms)",
        to_job.as_secs_f64() * 1000.0
    );

    // Only the CRD's default is in the stored object (as Kyma's: replicas 1); no profile is
    // written into the spec (status names the profiles in use).
    assert_eq!(created.spec.replicas, Some(1));
    assert_eq!(created.spec.resource_configuration, None);

    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("hello")
        .await
        .unwrap();
    let data = cm.data.clone().unwrap();
    assert_eq!(data["source"], "module.exports = { main: (event, context) => 'hello' }");
    assert!(data["dependencies"].contains("\"hello\""));
    assert_eq!(cm.owner_references()[0].uid, created.uid().unwrap());
    assert_eq!(cm.labels()["app.example.com/team"], "payments");
    // Build Pods opt out of Istio's sidecar, which would keep the Job from completing.
    let build_pod = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    assert_eq!(
        build_pod.annotations.as_ref().unwrap()["sidecar.istio.io/inject"],
        "false"
    );
    assert_eq!(job.labels()["app.example.com/team"], "payments");

    let settings = Settings {
        registry_push_address: registry.to_string(),
        ..Default::default()
    };
    let tag = desired::image_tag(&created, "node:20-slim", None, &[]);
    assert_eq!(job.labels()[LABEL_IMAGE_TAG], tag);
    assert_eq!(job.name_any(), desired::job_name(&created, &tag, 1));
    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    let c = &spec.template.spec.as_ref().unwrap().containers[0];
    let args = c.args.clone().unwrap();
    let push = format!("{}/{ns}.hello:{tag}", settings.registry_push_address);
    assert_eq!(
        &args[..9],
        [
            "build",
            "/src",
            "--runtime",
            "nodejs20",
            "--push",
            push.as_str(),
            "--digest-file",
            "/dev/termination-log",
            "--json"
        ]
    );
    assert_eq!(c.image.as_deref(), Some("fnbuild-test/builder:1"));
    assert_eq!(
        c.security_context.as_ref().unwrap().read_only_root_filesystem,
        Some(true)
    );
    assert_eq!(job.owner_references()[0].uid, created.uid().unwrap());

    let f = wait_for("BuildReady=Unknown/JobCreated or JobRunning", || async {
        let f = function(client, ns, "hello").await;
        let c = condition(&f, "BuildReady")?;
        (c.0 == "Unknown" && (c.1 == "JobCreated" || c.1 == "JobRunning")).then_some(f)
    })
    .await;
    let (st, _, msg) = condition(&f, "ConfigurationReady").unwrap();
    assert_eq!(st, "True");
    // nodejs20 is deprecated in Kyma: it runs, and the condition says so, in Kyma's words.
    assert!(
        msg.contains("runtime nodejs20 is deprecated and will be removed in the future"),
        "{msg}"
    );

    // The build succeeds → Deployment by digest, Service, HPA; BuildReady=True.
    let digest = format!("sha256:{}", "ab".repeat(32));
    finish_job(client, ns, &job.name_any(), true, &digest).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dep = wait_for("the Deployment", || async {
        deployments.get_opt("hello").await.unwrap()
    })
    .await;
    let image = format!("localhost:5000/{ns}.hello@{digest}");
    let pod = dep.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(image.as_str()));
    let env: Vec<(String, String)> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for (k, v) in [
        ("FUNC_RUNTIME", "nodejs20"),
        ("FUNC_NAME", "hello"),
        ("SERVICE_NAMESPACE", ns),
        ("FUNC_HANDLER", "main"),
        ("MOD_NAME", "handler"),
        ("FUNC_PORT", "8080"),
        ("GREETING", "hi"),
        (
            "PUBLISHER_PROXY_ADDRESS",
            "http://eventing-publisher-proxy.kyma-system.svc.cluster.local/publish",
        ),
        (
            "TRACE_COLLECTOR_ENDPOINT",
            "http://telemetry-otlp-traces.kyma-system.svc.cluster.local:4318/v1/traces",
        ),
    ] {
        assert!(env.contains(&(k.to_string(), v.to_string())), "{k}={v} in {env:?}");
    }
    // Kyma's platform wiring, as the API server stored it.
    assert_eq!(dep.labels()["app.example.com/team"], "payments");
    assert_eq!(dep.spec.revision_history_limit, Some(0));
    let template = dep.spec.template.metadata.as_ref().unwrap();
    assert_eq!(template.labels.as_ref().unwrap()["app.kubernetes.io/name"], "hello");
    assert_eq!(
        template.annotations.as_ref().unwrap()["proxy.istio.io/config"],
        r#"{ "holdApplicationUntilProxyStarts": true }"#
    );
    let startup = pod.containers[0].startup_probe.as_ref().expect("a startup probe");
    assert_eq!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
        150,
        "Kyma's start-up budget"
    );
    let svc = wait_for("the Service", || async {
        Api::<Service>::namespaced(client.clone(), ns)
            .get_opt("hello")
            .await
            .unwrap()
    })
    .await;
    let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 80));
    let svc_annotations = svc.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "8080"),
        ("prometheus.io/path", "/metrics"),
    ] {
        assert_eq!(
            svc_annotations.get(k).map(String::as_str),
            Some(v),
            "{k} on the Service"
        );
    }
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
    let hpa = wait_for("the HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .get_opt("hello")
            .await
            .unwrap()
    })
    .await;
    assert_eq!(hpa.spec.scale_target_ref.kind, "Function");
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(1), 3));
    let f = wait_for("BuildReady=True", || async {
        let f = function(client, ns, "hello").await;
        (condition(&f, "BuildReady").map(|c| c.0) == Some("True".into())).then_some(f)
    })
    .await;
    assert_eq!(
        f.status.as_ref().unwrap().function_image.as_deref(),
        Some(image.as_str())
    );
    assert_eq!(condition(&f, "Running").unwrap().0, "Unknown");

    // The Deployment becomes available → Running=True.
    make_available(client, ns, "hello").await;
    let f = wait_for("Running=True", || async {
        let f = function(client, ns, "hello").await;
        (condition(&f, "Running").map(|c| c.0) == Some("True".into())).then_some(f)
    })
    .await;
    let st = f.status.clone().unwrap();
    assert_eq!(st.replicas, Some(1));
    // Kyma's meaning of runtimeImage: the base the function is built on.
    assert_eq!(st.runtime_image.as_deref(), Some("node:20-slim"));
    // The security contexts in use, echoed as Kyma's status does.
    let dep = deployments.get("hello").await.unwrap();
    let pod = dep.spec.template.spec.unwrap();
    assert_eq!(st.pod_security_context, pod.security_context);
    assert_eq!(st.container_security_context, pod.containers[0].security_context);
    let psc = st.pod_security_context.unwrap();
    assert_eq!((psc.run_as_user, psc.fs_group), (Some(1000), Some(1000)));
    assert!(st
        .pod_selector
        .unwrap()
        .contains("serverless.kyma-project.io/function-name=hello"));
    let printed = cluster.kubectl_ok(&["get", "functions", "-n", ns], None);
    eprintln!("kubectl get functions:\n{printed}");
    assert!(printed.contains("CONFIGURED") && printed.contains("BUILT") && printed.contains("RUNNING"));
    let row: Vec<&str> = printed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["hello", "True", "True", "True", "nodejs20"], "{printed}");

    // Nothing changed: reconciles write nothing. Each poke (an annotation) triggers one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    let reasons: Vec<String> = listed.iter().filter_map(|e| e.reason.clone()).collect();
    for r in [
        "ConfigMapCreated",
        "JobCreated",
        "JobFinished",
        "DeploymentCreated",
        "ServiceCreated",
        "HorizontalPodAutoscalerCreated",
    ] {
        assert!(reasons.iter().any(|x| x == r), "event {r} in {reasons:?}");
    }
    assert!(listed.iter().all(|e| e
        .regarding
        .as_ref()
        .is_some_and(|o| o.kind.as_deref() == Some("Function"))));
    let events_before = listed.len();
    let versions = |f: Function| {
        let deployments = deployments.clone();
        async move {
            // (The ConfigMap is what this test pokes: its data, not its version, must stay.)
            let a = serde_json::to_string(
                &Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .get("hello")
                    .await
                    .unwrap()
                    .data,
            )
            .unwrap();
            let b = rv(&deployments.get("hello").await.unwrap());
            let c = rv(&Api::<Service>::namespaced(client.clone(), ns)
                .get("hello")
                .await
                .unwrap());
            let d = rv(&Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
                .get("hello")
                .await
                .unwrap());
            let e: Vec<String> = jobs_of(client, ns).await.iter().map(rv).collect();
            (a, b, c, d, e, serde_json::to_string(&f.status).unwrap())
        }
    };
    let before = versions(f.clone()).await;
    let writes0 = controller.metric("fnbuild_api_writes_total").await;
    let reconciles0 = controller.metric("fnbuild_reconciles_total").await;
    let cpu0 = controller.cpu();
    // Each poke (an annotation on the owned ConfigMap: no webhook call) triggers a reconcile.
    // No scraping while poking, so that the CPU figure is the reconciles' own.
    let pokes = 50;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..pokes {
        let p = json!({"metadata": {"annotations": {"test.fnbuild/poke": i.to_string()}}});
        cms.patch("hello", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = controller.cpu() - cpu0;
    let writes = controller.metric("fnbuild_api_writes_total").await - writes0;
    let reconciled = controller.metric("fnbuild_reconciles_total").await - reconciles0;
    assert!(
        reconciled >= pokes as f64 / 2.0,
        "the pokes caused {reconciled} reconciles"
    );
    let after = versions(function(client, ns, "hello").await).await;
    assert_eq!(
        rv(&function(client, ns, "hello").await),
        rv(&f),
        "the Function was not written"
    );
    assert_eq!(writes, 0.0, "an unchanged Function must cause no API writes");
    assert_eq!(before, after, "resourceVersions and status unchanged");
    assert_eq!(
        events.list(&ListParams::default()).await.unwrap().items.len(),
        events_before,
        "no new events"
    );
    eprintln!(
        "FIGURE unchanged reconcile: {reconciled} reconciles ({pokes} pokes), {writes} API writes, controller CPU {:.0} ms in all, {:.2} ms per reconcile (10 ms clock ticks; includes decoding the {pokes} ConfigMap watch events)",
        cpu.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0 / reconciled
    );

    // Env change: the Deployment is updated, no build.
    let p = json!({"spec": {"env": [{"name": "GREETING", "value": "hello there"}]}});
    fns.patch("hello", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    wait_for("the Deployment with the new env", || async {
        let d = deployments.get("hello").await.unwrap();
        let env = d.spec.template.spec.unwrap().containers[0].env.clone().unwrap();
        env.iter()
            .any(|e| e.name == "GREETING" && e.value.as_deref() == Some("hello there"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = jobs_of(client, ns).await;
    assert_eq!(jobs.len(), 1, "no new Job for an env change");
    assert_eq!(jobs[0].name_any(), job.name_any());
    let d = deployments.get("hello").await.unwrap();
    assert_eq!(
        d.spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some(image.as_str())
    );

    // Source change: a new tag, a new Job; the old Job goes.
    let p = json!({"spec": {"source": {"inline": {"source": "module.exports = { main: () => 'v2' }"}}}});
    fns.patch("hello", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    let new_job = wait_for("a new Job for the new source", || async {
        jobs_of(client, ns)
            .await
            .into_iter()
            .find(|j| j.labels()[LABEL_IMAGE_TAG] != tag)
    })
    .await;
    let f2 = function(client, ns, "hello").await;
    let tag2 = desired::image_tag(&f2, "node:20-slim", None, &[]);
    assert_eq!(new_job.labels()[LABEL_IMAGE_TAG], tag2);
    wait_for("the old Job deleted", || async {
        let j = jobs_of(client, ns).await;
        (j.iter().all(|j| j.labels()[LABEL_IMAGE_TAG] == tag2)).then_some(())
    })
    .await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("hello")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["source"], "module.exports = { main: () => 'v2' }");

    // The new build fails in its install step (an init container) → BuildReady=False/JobFailed
    // with that step's last lines, then a retry.
    let log = "fnbuild: installing dependencies\nnpm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/left-padd\nerror: dependency install failed: npm exited with 1";
    fail_job_in_install_step(client, ns, &new_job.name_any(), log).await;
    let f = wait_for("BuildReady=False/JobFailed", || async {
        let f = function(client, ns, "hello").await;
        (condition(&f, "BuildReady").map(|c| (c.0, c.1)) == Some(("False".into(), "JobFailed".into()))).then_some(f)
    })
    .await;
    let msg = condition(&f, "BuildReady").unwrap().2;
    assert!(
        msg.contains(&new_job.name_any())
            && msg.contains("its install step failed")
            && msg.contains("npm error 404 Not Found")
            && msg.contains("dependency install failed"),
        "{msg}"
    );
    let retry = wait_for("a retry Job (attempt 2)", || async {
        jobs_of(client, ns)
            .await
            .into_iter()
            .find(|j| j.labels()[desired::LABEL_BUILD_ATTEMPT] == "2")
    })
    .await;
    assert_eq!(retry.labels()[LABEL_IMAGE_TAG], tag2);
    // Each message is an event of its own, as client-go's recorder (Kyma's) makes them: the
    // retry's JobCreated does not merely count up the first one's.
    wait_for("a JobCreated event for each build Job", || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("JobCreated"))
            .filter_map(|e| e.note)
            .collect();
        [job.name_any(), new_job.name_any(), retry.name_any()]
            .iter()
            .all(|j| notes.iter().any(|n| n.contains(j.as_str())))
            .then_some(())
    })
    .await;
    wait_for("the failed Job removed", || async {
        (jobs_of(client, ns)
            .await
            .iter()
            .all(|j| j.name_any() != new_job.name_any()))
        .then_some(())
    })
    .await;
    assert_eq!(controller.metric("fnbuild_builds_failed_total").await, 1.0);
    // Meanwhile the function keeps running the last good image.
    let d = deployments.get("hello").await.unwrap();
    assert_eq!(
        d.spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some(image.as_str())
    );

    // min = max replicas: no HPA.
    let p = json!({"spec": {"scaleConfig": {"minReplicas": 2, "maxReplicas": 2}, "replicas": 2}});
    fns.patch("hello", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    wait_for("the HPA deleted", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .get_opt("hello")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("2 replicas", || async {
        (deployments.get("hello").await.unwrap().spec.replicas == Some(2)).then_some(())
    })
    .await;

    // The retry succeeds: no build is left running (while one runs, the controller asks the
    // registry for its image every 200 ms, which later reconcile counts would see).
    let digest2 = format!("sha256:{}", "cd".repeat(32));
    finish_job(client, ns, &retry.name_any(), true, &digest2).await;
    wait_for("the retry's image deployed", || async {
        let d = deployments.get("hello").await.unwrap();
        (d.spec.template.spec.unwrap().containers[0].image.as_deref()
            == Some(format!("localhost:5000/{ns}.hello@{digest2}").as_str()))
        .then_some(())
    })
    .await;
}

/// The builder puts the manifest last, under the image tag: once the registry has that tag, the
/// build is done, before its Job is seen to finish (which this test never plays).
async fn push_seen_before_the_job_finishes(client: &Client) {
    let ns = &hello_in_new_namespace(client, "ctl-push").await;
    let job = wait_for("the build Job", || async {
        jobs_of(client, ns).await.into_iter().next()
    })
    .await;
    wait_for("BuildReady=Unknown/JobRunning", || async {
        let f = function(client, ns, "fn").await;
        (condition(&f, "BuildReady").map(|c| c.1) == Some("JobRunning".into())).then_some(())
    })
    .await;
    PUSHED.lock().unwrap().push(format!("{ns}.fn"));
    let t = std::time::Instant::now();
    let f = wait_for("BuildReady=True from the registry", || async {
        let f = function(client, ns, "fn").await;
        (condition(&f, "BuildReady").map(|c| c.0) == Some("True".into())).then_some(f)
    })
    .await;
    eprintln!(
        "FIGURE push seen in the registry → BuildReady=True: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let (_, reason, msg) = condition(&f, "BuildReady").unwrap();
    assert_eq!(reason, "JobFinished");
    assert!(msg.contains(&job.name_any()) && msg.contains("pushed"), "{msg}");
    let digest = fnbuild::registry::sha256_digest(MANIFEST.as_bytes());
    let image = format!("localhost:5000/{ns}.fn@{digest}");
    assert_eq!(f.status.unwrap().function_image, Some(image.clone()));
    let dep = wait_for("the Deployment", || async {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("fn")
            .await
            .unwrap()
    })
    .await;
    assert_eq!(dep.spec.template.spec.unwrap().containers[0].image, Some(image));
    let job = Api::<Job>::namespaced(client.clone(), ns)
        .get(&job.name_any())
        .await
        .unwrap();
    assert!(
        job.status.is_none_or(|s| s.succeeded.is_none() && s.failed.is_none()),
        "the Job has not finished"
    );
}

async fn webhook_and_bypass(cluster: &Cluster, client: &Client, controller: &Controller, manifests: &str) {
    let ns = &run_ns("ctl-b");
    namespace(client, ns).await;
    let mut bad = hello(ns, "bad");
    bad["spec"]["env"] = json!([{"name": "FUNC_PORT", "value": "9"}]);
    bad["spec"]["labels"] = json!({"serverless.kyma-project.io/x": "y"});
    bad["spec"]["resourceConfiguration"] =
        json!({"function": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}});
    let denied0 = controller
        .metric("fnbuild_webhook_requests_total{result=\"denied\"}")
        .await;
    let out = cluster.kubectl(&["apply", "-f", "-"], Some(&bad.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid Function must be denied");
    eprintln!("webhook denial as kubectl shows it:\n{stderr}");
    assert!(stderr.contains("denied the request"), "{stderr}");
    assert!(stderr.contains("spec.env[0].name: FUNC_PORT is reserved"), "{stderr}");
    assert!(stderr.contains("spec.labels[serverless.kyma-project.io/x]"), "{stderr}");
    assert!(
        stderr.contains("spec.resourceConfiguration.function.resources.requests.cpu: 2 is more than the limit 1"),
        "{stderr}"
    );
    assert!(
        controller
            .metric("fnbuild_webhook_requests_total{result=\"denied\"}")
            .await
            > denied0
    );

    // Dependencies the builder would refuse are refused at apply, in the builder's words.
    for (runtime, source, deps, says) in [
        (
            "nodejs20",
            "module.exports = { main: () => 'x' }",
            r#"{"dependencies":{"x":"file:../../etc"}}"#,
            "\"x\": file:../../etc is outside the function's directory",
        ),
        (
            "python312",
            "def main(event, context):\n    return 'x'\n",
            "six==1.16.0\n-r /etc/passwd\n",
            "spec.source.inline.dependencies: requirements.txt line 2: -r /etc/passwd is outside the function's directory",
        ),
    ] {
        let mut f = hello(ns, "bad-deps");
        f["spec"]["runtime"] = json!(runtime);
        f["spec"]["source"]["inline"] = json!({"source": source, "dependencies": deps});
        let out = cluster.kubectl(&["apply", "-f", "-"], Some(&f.to_string()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{deps:?} must be denied");
        assert!(stderr.contains(says), "{stderr}");
    }

    // Without the validating webhook the API server stores it; the controller reports it.
    cluster.kubectl_ok(
        &["delete", "validatingwebhookconfiguration", "fnbuild-controller"],
        None,
    );
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&bad.to_string()));
    let f = wait_for("ConfigurationReady=False/InvalidFunctionSpec", || async {
        let f = function(client, ns, "bad").await;
        (condition(&f, "ConfigurationReady").map(|c| c.1) == Some("InvalidFunctionSpec".into())).then_some(f)
    })
    .await;
    let (st, _, msg) = condition(&f, "ConfigurationReady").unwrap();
    assert_eq!(st, "False");
    assert!(msg.contains("spec.env[0].name: FUNC_PORT is reserved"), "{msg}");
    let reconciles = controller.metric("fnbuild_reconciles_total").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        controller.metric("fnbuild_reconciles_total").await,
        reconciles,
        "no requeue for an invalid spec"
    );
    assert!(Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("bad")
        .await
        .unwrap()
        .is_none());
    assert!(jobs_of(client, ns).await.is_empty());
    // Put the webhook back.
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(manifests));
}

/// A fresh namespace (`prefix-…`) with the hello Function `fn` created in it.
async fn hello_in_new_namespace(client: &Client, prefix: &str) -> String {
    let ns = run_ns(prefix);
    namespace(client, &ns).await;
    let f: Function = serde_json::from_value(hello(&ns, "fn")).unwrap();
    Api::<Function>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &f)
        .await
        .unwrap();
    ns
}

/// A ConfigMap the API server refuses (here a quota of none) is reported in the status and an
/// event, not only in the controller's log.
async fn configmap_refused(cluster: &Cluster, client: &Client) {
    let ns = run_ns("ctl-quota");
    namespace(client, &ns).await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "no-configmaps", "namespace": ns}, "spec": {"hard": {"configmaps": "0"}}});
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&quota.to_string()));
    // Play kube-controller-manager's quota controller: admission enforces a quota once its
    // status is there.
    let mut quota: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(
        &["get", "resourcequota", "no-configmaps", "-n", &ns, "-o", "json"],
        None,
    ))
    .unwrap();
    quota["status"] = json!({"hard": {"configmaps": "0"}, "used": {"configmaps": "0"}});
    let status_path = format!("/api/v1/namespaces/{ns}/resourcequotas/no-configmaps/status");
    cluster.kubectl_ok(&["replace", "--raw", &status_path, "-f", "-"], Some(&quota.to_string()));
    let f: Function = serde_json::from_value(hello(&ns, "fn")).unwrap();
    Api::<Function>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &f)
        .await
        .unwrap();
    let (_, _, message) = wait_for("ConfigurationReady=False/ConfigMapError", || async {
        let f = function(client, &ns, "fn").await;
        condition(&f, "ConfigurationReady").filter(|c| c.0 == "False" && c.1 == "ConfigMapError")
    })
    .await;
    assert!(
        message.starts_with("ConfigMap fn: ") && message.contains("forbidden"),
        "{message}"
    );
    let events = cluster.kubectl_ok(&["get", "events", "-n", &ns, "-o", "jsonpath={.items[*].reason}"], None);
    assert!(events.contains("ConfigMapError"), "a Warning event: {events}");
    assert!(jobs_of(client, &ns).await.is_empty(), "no build without its ConfigMap");
}

async fn image_already_in_registry(client: &Client) {
    let ns = &hello_in_new_namespace(client, "ctl-skip").await;
    let f = wait_for("BuildReady=True/ImageExists", || async {
        let f = function(client, ns, "fn").await;
        (condition(&f, "BuildReady").map(|c| c.1) == Some("ImageExists".into())).then_some(f)
    })
    .await;
    let digest = fnbuild::registry::sha256_digest(MANIFEST.as_bytes());
    assert_eq!(
        f.status.unwrap().function_image,
        Some(format!("localhost:5000/{ns}.fn@{digest}"))
    );
    assert!(
        jobs_of(client, ns).await.is_empty(),
        "no build when the registry has the image"
    );
    wait_for("the Deployment", || async {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("fn")
            .await
            .unwrap()
    })
    .await;
}

/// Every desired object (objects::desired_objects: every optional part switched on) passes
/// kubectl's validation against the 1.20 API server's OpenAPI schema and the API server's own
/// (dry run).
fn desired_objects_pass_server_validation(cluster: &Cluster) {
    // Owner references need the owner to exist only at garbage-collection time; a dry run is fine.
    for o in objects::desired_objects() {
        let kind = format!("{} {}", o["kind"], o["metadata"]["name"]);
        let out = cluster.kubectl(
            &["apply", "--dry-run=server", "--validate=true", "-f", "-"],
            Some(&o.to_string()),
        );
        assert!(
            out.status.success(),
            "{kind} fails validation:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            serde_json::to_string_pretty(&o).unwrap()
        );
        eprintln!("server-side dry run: {}", String::from_utf8_lossy(&out.stdout).trim());
    }
}
