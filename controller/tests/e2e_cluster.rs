//! End to end on a real single-node Kubernetes 1.20 (`tests/cluster/up`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet running Pods in Docker): nothing is
//! simulated. A Function applied with kubectl is built by the builder image (Dockerfile.builder,
//! made here by tests/support/make-builder-image.sh) in a build Job, pushed to a local registry
//! that needs credentials (given by a Kyma-style `kubernetes.io/dockerconfigjson` Secret), run
//! by a Deployment from `image@digest`, and answers HTTP through `kubectl port-forward` on
//! 127.0.0.1.
//!
//! The controller runs first as a process (`fnbuild-controller run`, acting as its ServiceAccount),
//! then as the Deployment of `fnbuild-controller manifests`, in the builder image.
//!
//! The test cluster has no kube-proxy and its API server listens on 127.0.0.1 only, so Pods
//! that talk to the API server or the registry (build Jobs, the controller) use the node's
//! network: the controller runs with `--build-host-network`, and the test patches the
//! controller's Deployment to `hostNetwork` with the API server's loopback address.
//!
//! Only one kubelet can share a Docker daemon, so this uses the default cluster
//! (`/tmp/fnbuild-cluster`, or FNBUILD_E2E_CLUSTER_DIR): a running one is reused (and what this
//! test made in it is removed at the end), else it is started and stopped at the end (kept with
//! FNBUILD_KEEP_CLUSTER=1). Runs of this test are serialised by a lock file.
//!
//! Figures (printed): apply → first HTTP 200, source edit → new answer (FNBUILD_E2E_RUNS times,
//! default 5; medians), and the build Pods' CPU time and peak memory, read from their containers'
//! cgroups while they run. FNBUILD_E2E_BUILDER_BIN: the fnbuild binary put into the builder
//! image (default: this test build's).
//! (Over 600 lines: one scenario on one cluster, set up once because that takes minutes; the
//! helpers that drive kubectl and the cluster come first, the scenario from line ~630.)

#[path = "../../tests/common/mod.rs"]
mod common;
mod e2e_kyma;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUILD_TIMEOUT: Duration = Duration::from_secs(180);
const FN_LABEL: &str = "serverless.kyma-project.io/function-name";

fn repo() -> PathBuf {
    common::repo_root()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("e2e: {}", msg.as_ref());
}

// ---------------------------------------------------------------------------------------------
// The cluster

struct Cluster {
    dir: PathBuf,
    apiserver_port: u16,
    /// The API server's URL and the admin token, for `api_get`.
    apiserver_url: String,
    token: String,
    started_here: bool,
    /// Reused cluster: what to delete at the end (kubectl delete args).
    cleanup: Mutex<Vec<Vec<String>>>,
    _lock: std::fs::File,
}

impl Cluster {
    fn up() -> Cluster {
        let dir =
            PathBuf::from(std::env::var("FNBUILD_E2E_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/fnbuild-cluster".into()));
        let lock = std::fs::File::create("/tmp/fnbuild-e2e.lock").unwrap();
        lock.lock().unwrap();
        let kubectl = dir.join("bin/kubectl");
        let was_up = std::fs::read_to_string(dir.join("mode")).is_ok_and(|m| m.trim() == "full")
            && Command::new(&kubectl)
                .env("KUBECONFIG", dir.join("kubeconfig"))
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let t = Instant::now();
        let out = Command::new(repo().join("tests/cluster/up"))
            .env("FNBUILD_CLUSTER_DIR", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/cluster/up");
        assert!(out.status.success(), "tests/cluster/up failed");
        // Nothing here may reach the Service range: the machine refuses it (no kube-proxy).
        assert_service_range_refused();
        log(format!(
            "cluster {} in {:.1}s ({})",
            dir.display(),
            t.elapsed().as_secs_f64(),
            if was_up { "reused" } else { "started" }
        ));
        let env = std::fs::read_to_string(dir.join("cluster.env")).unwrap();
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} in cluster.env"))
                .to_string()
        };
        Cluster {
            apiserver_port: var("FNBUILD_APISERVER_PORT").parse().expect("a port"),
            apiserver_url: var("FNBUILD_APISERVER_URL"),
            token: var("FNBUILD_CLUSTER_TOKEN"),
            dir,
            started_here: !was_up,
            cleanup: Mutex::new(Vec::new()),
            _lock: lock,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn kubectl_cmd(&self) -> Command {
        common::kubectl_cmd(&self.dir)
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        common::kubectl(&self.dir, args, stdin)
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        common::kubectl_ok(&self.dir, args, stdin)
    }

    /// Scales the controller Deployment from `fnbuild-controller manifests`.
    fn scale_controller_deployment(&self, replicas: u32) {
        let replicas = format!("--replicas={replicas}");
        self.kubectl_ok(
            &[
                "scale",
                "-n",
                "serverless-system",
                "deployment/fnbuild-controller",
                &replicas,
            ],
            None,
        );
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a, None)).unwrap()
    }

    /// GET of an API path, straight to the API server (curl starts in milliseconds, kubectl
    /// takes a tenth of a second or more: this is what the waits poll with).
    fn api_get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sSfk", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(format!("{}{path}", self.apiserver_url))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn apply(&self, obj: &Value) -> String {
        self.kubectl_ok(&["apply", "-f", "-"], Some(&obj.to_string()))
    }

    /// A namespace of this run (`labels` on it), removed at the end, once its default
    /// ServiceAccount is there (Pods cannot be made before).
    fn namespace(&self, ns: &str, labels: Value) {
        self.remove_later(&["namespace", ns]);
        self.apply(&json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels}}));
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || {
                self.kubectl(&["get", "serviceaccount", "-n", ns, "default"], None)
                    .status
                    .success()
                    .then_some(())
            },
        );
    }

    /// On a reused cluster, delete this at the end.
    fn remove_later(&self, args: &[&str]) {
        self.cleanup
            .lock()
            .unwrap()
            .push(args.iter().map(|s| s.to_string()).collect());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var("FNBUILD_KEEP_CLUSTER").as_deref() == Ok("1");
        if self.started_here && !keep {
            let _ = Command::new(repo().join("tests/cluster/down"))
                .env("FNBUILD_CLUSTER_DIR", &self.dir)
                .status();
            return;
        }
        for args in self.cleanup.lock().unwrap().iter().rev() {
            let mut a: Vec<&str> = vec!["delete", "--ignore-not-found", "--wait=false"];
            a.extend(args.iter().map(String::as_str));
            let _ = self.kubectl(&a, None);
        }
    }
}

/// A child process killed (by its pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting and HTTP

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl port-forward pod/POD :8080` on 127.0.0.1; the local port once it forwards.
fn port_forward(c: &Cluster, ns: &str, pod: &str) -> Option<(Proc, u16)> {
    let mut child = c
        .kubectl_cmd()
        .args([
            "port-forward",
            "-n",
            ns,
            "--address",
            "127.0.0.1",
            &format!("pod/{pod}"),
            ":8080",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:40000 -> 8080"
        while let Some(Ok(l)) = lines.next() {
            if let Some(p) = l
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                let _ = tx.send(p);
                break;
            }
        }
        for _ in lines {} // keep the pipe drained
    });
    let port = rx.recv_timeout(Duration::from_secs(5)).ok()?;
    Some((proc, port))
}

/// GET / through a Pod's port-forward.
fn http_get_forwarded(port: u16) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}/");
    // A Pod going away leaves a forwarded connection hanging: a short timeout.
    http_request_once("GET", &url, &[], b"", Duration::from_secs(1))
        .ok()
        .map(|(status, _, body)| (status, body))
}

/// GET / of a Pod, through a port-forward of its own.
fn http_get_pod(c: &Cluster, ns: &str, pod: &str) -> Option<(u16, String)> {
    let (_pf, port) = port_forward(c, ns, pod)?;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        if let Some(answer) = http_get_forwarded(port) {
            return Some(answer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The function's ready Pods (not being deleted), with their images.
fn ready_pods(c: &Cluster, ns: &str, name: &str) -> Vec<(String, String)> {
    let pods = c.get(&[
        "pods",
        "-n",
        ns,
        "-l",
        &format!("{FN_LABEL}={name},serverless.kyma-project.io/resource=deployment"),
    ]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["containers"][0]["image"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The function's Pods that run (not being deleted): (name, Ready).
fn running_pods(c: &Cluster, ns: &str, name: &str) -> Vec<(String, bool)> {
    let selector = format!("{FN_LABEL}={name},serverless.kyma-project.io/resource=deployment");
    let pods = c.api_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector={}",
        selector.replace('/', "%2F")
    ));
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            (p["metadata"]["name"].as_str().unwrap_or_default().to_string(), ready)
        })
        .collect()
}

/// Waits until a ready Pod of the function answers `GET /` with 200 and `want`; the time it took.
/// Each running Pod gets one port-forward, opened as soon as it runs (while its readiness is still
/// being probed) and kept, so that a poll costs one API read and a GET per ready Pod: the figure
/// then carries the wait for the function, not for the tools that measure it. Logs each change of
/// what it sees (the Function's conditions and image, the Pods, the answers) with the time since
/// `since`, so that a slow wait shows which step took the time.
fn wait_answer(c: &Cluster, ns: &str, name: &str, want: &str, since: Instant) -> Duration {
    let mut forwards: BTreeMap<String, (Proc, u16)> = BTreeMap::new();
    let mut last = String::new();
    let mut seen = String::new();
    loop {
        let pods = running_pods(c, ns, name);
        forwards.retain(|p, _| pods.iter().any(|(q, _)| q == p));
        for (pod, _) in &pods {
            if !forwards.contains_key(pod) {
                if let Some(forward) = port_forward(c, ns, pod) {
                    forwards.insert(pod.clone(), forward);
                }
            }
        }
        let mut answers = Vec::new();
        for (pod, _) in pods.iter().filter(|(_, ready)| *ready) {
            let Some((_, port)) = forwards.get(pod) else { continue };
            match http_get_forwarded(*port) {
                Some((status, body)) if status == 200 && body == want => {
                    log(format!(
                        "  {ns}/{name} +{}: {pod} answers {want:?}",
                        secs(since.elapsed())
                    ));
                    return since.elapsed();
                }
                Some((status, body)) => {
                    last = format!("{pod}: {status} {body:?}");
                    answers.push(last.clone());
                }
                None => {
                    answers.push(format!("{pod}: no answer"));
                    forwards.remove(pod); // opened afresh on the next poll
                }
            }
        }
        // Read only when no Pod answered yet, so that the figure does not carry this request.
        let f = c.api_get(&format!(
            "/apis/serverless.kyma-project.io/v1alpha2/namespaces/{ns}/functions/{name}"
        ));
        let state = format!(
            "conditions {:?}, image {}, pods {:?}, answers {answers:?}",
            conditions(&f)
                .into_iter()
                .map(|(t, (s, r, _))| format!("{t}={s}/{r}"))
                .collect::<Vec<_>>(),
            f["status"]["functionImage"]
                .as_str()
                .and_then(|i| i.rsplit('@').next())
                .map_or("-", |d| &d[..d.len().min(19)]),
            pods.iter()
                .map(|(p, ready)| format!("{p}{}", if *ready { " (ready)" } else { "" }))
                .collect::<Vec<_>>(),
        );
        if state != seen {
            log(format!("  {ns}/{name} +{}: {state}", secs(since.elapsed())));
            seen = state;
        }
        if since.elapsed() > BUILD_TIMEOUT {
            let f = c.get(&["function", "-n", ns, name]);
            panic!(
                "{ns}/{name} did not answer {want:?} within {BUILD_TIMEOUT:?} (last: {last}); status: {:#}",
                f["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn conditions(f: &Value) -> BTreeMap<String, (String, String, String)> {
    f["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("type"), (s("status"), s("reason"), s("message")))
        })
        .collect()
}

fn all_true(f: &Value) -> bool {
    let c = conditions(f);
    ["ConfigurationReady", "BuildReady", "Running"]
        .iter()
        .all(|t| c.get(*t).is_some_and(|(s, _, _)| s == "True"))
}

fn jobs_of(c: &Cluster, ns: &str, name: &str) -> BTreeSet<String> {
    let jobs = c.get(&["jobs", "-n", ns, "-l", &format!("{FN_LABEL}={name}")]);
    jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The build Pods' CPU and memory, from their containers' cgroups (v1, cgroupfs driver)

#[derive(Debug, Default, Clone)]
struct BuildUsage {
    /// memory.max_usage_in_bytes (RSS + page cache), the last value read.
    max_usage: u64,
    /// The largest total_rss of memory.stat seen.
    peak_rss: u64,
    /// cpuacct.usage, the last value read (ns).
    cpu_ns: u64,
}

struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, BuildUsage>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<BTreeMap<String, BuildUsage>>> = Default::default();
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let read = |p: &Path| std::fs::read_to_string(p).ok();
            while !st.load(Ordering::Relaxed) {
                // The kubelet names build containers k8s_build_<pod>_<ns>_...
                let out = Command::new("docker")
                    .args([
                        "ps",
                        "--no-trunc",
                        "--filter",
                        "name=k8s_build_",
                        "--format",
                        "{{.ID}} {{.Names}}",
                    ])
                    .output();
                let ids: Vec<(String, String)> = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline && !ids.is_empty() {
                    for (id, name) in &ids {
                        let Some(mem) = find_cgroup("memory", id) else { continue };
                        let cpu = find_cgroup("cpuacct", id);
                        let mut s = sn.lock().unwrap();
                        let u = s.entry(name.clone()).or_default();
                        if let Some(v) =
                            read(&mem.join("memory.max_usage_in_bytes")).and_then(|v| v.trim().parse().ok())
                        {
                            u.max_usage = u.max_usage.max(v);
                        }
                        if let Some(stat) = read(&mem.join("memory.stat")) {
                            if let Some(rss) = stat
                                .lines()
                                .find_map(|l| l.strip_prefix("total_rss "))
                                .and_then(|v| v.trim().parse::<u64>().ok())
                            {
                                u.peak_rss = u.peak_rss.max(rss);
                            }
                        }
                        if let Some(v) = cpu
                            .and_then(|c| read(&c.join("cpuacct.usage")))
                            .and_then(|v| v.trim().parse().ok())
                        {
                            u.cpu_ns = u.cpu_ns.max(v);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn results(&self) -> BTreeMap<String, BuildUsage> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The container's cgroup directory in a v1 hierarchy (`docker/<id>` or below a parent).
fn find_cgroup(controller: &str, id: &str) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup").join(controller);
    for cand in [root.join("docker").join(id), root.join(id)] {
        if cand.is_dir() {
            return Some(cand);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Functions

fn node_fn(ns: &str, name: &str, version: &str, greeting: &str) -> Value {
    json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "nodejs20",
            "source": {"inline": {
                "source": format!("module.exports = {{ main: function (event, context) {{ return 'node {version} ' + process.env.GREETING; }} }};\n"),
                "dependencies": "{\"name\": \"hello\", \"version\": \"1.0.0\", \"dependencies\": {}}"
            }},
            "env": [{"name": "GREETING", "value": greeting}],
            "scaleConfig": {"minReplicas": 1, "maxReplicas": 2},
            "resourceConfiguration": {"function": {"profile": "M"}}
        }
    })
}

fn python_fn(ns: &str, name: &str, version: &str, requirements: &str) -> Value {
    json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "python312",
            "source": {"inline": {
                "source": format!("import six\n\ndef main(event, context):\n    return 'python {version} six ' + six.__version__\n"),
                "dependencies": requirements
            }},
            "resourceConfiguration": {"function": {"profile": "M"}}
        }
    })
}

fn function(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get(&["function", "-n", ns, name])
}

fn function_image(f: &Value) -> String {
    f["status"]["functionImage"].as_str().unwrap_or_default().to_string()
}

/// Applies a new Function and waits for its first 200 with `want`; checks the conditions, the
/// image (by digest, from the registry) and the Deployment. Returns (time, functionImage).
fn deploy_new(c: &Cluster, obj: &Value, want: &str, registry: &str) -> (Duration, String) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let t = Instant::now();
    c.apply(obj);
    let took = wait_answer(c, ns, name, want, t);
    let f = wait_for(
        &format!("{ns}/{name}: all conditions True"),
        Duration::from_secs(30),
        || {
            let f = function(c, ns, name);
            all_true(&f).then_some(f)
        },
    );
    let image = function_image(&f);
    assert!(
        image.starts_with(&format!("{registry}/{ns}.{name}@sha256:")),
        "functionImage {image}"
    );
    let d = c.get(&["deployment", "-n", ns, name]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], image.as_str());
    (took, image)
}

#[test]
fn functions_run_end_to_end_on_a_real_cluster() {
    setup();
    let t_all = Instant::now();
    let runs: usize = std::env::var("FNBUILD_E2E_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let cluster = Cluster::up();
    let c = &cluster;

    // The registry (credentials required), the base images and the builder image in it.
    let registry = Registry::start_htpasswd();
    let reg = registry.addr().to_string();
    let bases = base_images();
    let node_base = registry.push_oci_layout(&bases.node, "20", "bases/node:20");
    let python_base = registry.push_oci_layout(&bases.python, "3.12", "bases/python:3.12");
    let builder_bin = std::env::var("FNBUILD_E2E_BUILDER_BIN").unwrap_or_else(|_| fnbuild_bin().display().to_string());
    let controller_bin = std::env::var("FNBUILD_E2E_CONTROLLER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fnbuild-controller").to_string());
    let t = Instant::now();
    let out = Command::new(repo().join("tests/support/make-builder-image.sh"))
        .args([
            "--binary",
            &builder_bin,
            "--controller-binary",
            &controller_bin,
            "--push",
            &format!("{reg}/fnbuild/builder"),
        ])
        .env("FNBUILD_PUSH_CREDS", format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"))
        .env("FNBUILD_RUNTIME_LIBRARIES", common::runtime_libraries())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "make-builder-image.sh failed");
    let builder = String::from_utf8(out.stdout).unwrap().trim().to_string();
    log(format!("builder image {builder} ({})", secs(t.elapsed())));

    // Credentials, as Docker and Kyma keep them.
    let auth = base64_std(&format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
    let dockerconfig = json!({"auths": {reg.clone(): {"auth": auth}}}).to_string();
    let work = temp_dir("e2e-");
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), &dockerconfig).unwrap();
    let registry_secret = |ns: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "serverless-registry-config-default", "namespace": ns},
            "stringData": {".dockerconfigjson": dockerconfig}
        })
    };

    // `fnbuild-controller manifests | kubectl apply -f -`, the webhooks calling the controller on 127.0.0.1.
    let tls = tls_pair(work.path());
    let webhook_port = free_port();
    let metrics_port = free_port();
    let git_webhook_port = free_port();
    let settings_args = vec![
        format!("--builder-image={builder}"),
        format!("--registry-push-address={reg}"),
        format!("--registry-pull-address={reg}"),
        format!("--base-image=nodejs20={node_base}"),
        format!("--base-image=nodejs22={node_base}"),
        format!("--base-image=nodejs24={node_base}"),
        format!("--base-image=python312={python_base}"),
        "--build-host-network".to_string(),
        "--build-retry-delay=30".to_string(),
        // Kyma's in-cluster eventing and tracing addresses name hosts this cluster has no DNS
        // for: a lookup would leave the machine. The Functions here get neither, until the
        // controller's Deployment (7) is given the stand-in's address.
        "--publisher-proxy-address=".to_string(),
        "--trace-collector-endpoint=".to_string(),
    ];
    let manifests = run_ok(
        Command::new(&controller_bin)
            .arg("manifests")
            // This cluster's API server predates CEL rules in CRDs.
            .arg("--kubernetes-version=1.20")
            .arg(format!("--image={builder}"))
            .arg(format!("--webhook-url=https://127.0.0.1:{webhook_port}"))
            .arg(format!("--tls-cert={}", tls.0.display()))
            .arg(format!("--tls-key={}", tls.1.display()))
            .args(&settings_args),
    );
    for what in [
        ["validatingwebhookconfiguration", "fnbuild-controller"],
        ["clusterrolebinding", "fnbuild-controller"],
        ["clusterrole", "fnbuild-controller"],
        ["namespace", "serverless-system"],
    ] {
        c.remove_later(&what);
    }
    let applied = c.kubectl_ok(&["apply", "-f", "-"], Some(&manifests));
    log(format!(
        "fnbuild-controller manifests | kubectl apply -f -:\n{}",
        applied.trim_end()
    ));
    // The in-cluster controller waits (second part); the process controller goes first.
    c.scale_controller_deployment(0);
    c.apply(&registry_secret("serverless-system"));

    let ns = format!("e2e-{}", std::process::id());
    c.namespace(&ns, json!({}));
    c.apply(&registry_secret(&ns));
    // The key that signs the namespace's dependency cache entries (only the push steps see it).
    let cache_key = format!(
        "fnbuild-e2e-cache-key-{}-{}",
        std::process::id(),
        t_all.elapsed().as_nanos()
    );
    let cache_key_secret = |ns: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "fnbuild-dependency-cache-key", "namespace": ns},
            "stringData": {"key": cache_key}
        })
    };
    c.apply(&cache_key_secret(&ns));

    // The controller as a process, acting as its ServiceAccount (the manifests' RBAC).
    let kc = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let (before, after) = kc.split_once("  user:\n").expect("a user in the kubeconfig");
    let sa = "    as: system:serviceaccount:serverless-system:fnbuild-controller\n    as-groups:\n    - system:serviceaccounts\n    - system:serviceaccounts:serverless-system\n    - system:authenticated\n";
    let controller_kc = work.path().join("controller.kubeconfig");
    std::fs::write(&controller_kc, format!("{before}  user:\n{sa}{after}")).unwrap();
    let controller_log = work.path().join("controller.log");
    let controller = Proc(
        Command::new(&controller_bin)
            .env("KUBECONFIG", &controller_kc)
            .env("DOCKER_CONFIG", &docker_config)
            .env("RUST_LOG", "fnbuild=info,fnbuild_controller=info,warn")
            .arg("run")
            .args(&settings_args)
            .arg(format!("--webhook-addr=127.0.0.1:{webhook_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--tls-cert={}", tls.0.display()))
            .arg(format!("--tls-key={}", tls.1.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&controller_log).unwrap())
            .spawn()
            .expect("start fnbuild-controller"),
    );
    let _dump = DumpOnPanic {
        cluster: c,
        ns: ns.clone(),
        log: controller_log.clone(),
    };
    wait_for("the controller's /healthz", Duration::from_secs(30), || {
        http_request_once(
            "GET",
            &format!("http://127.0.0.1:{metrics_port}/healthz"),
            &[],
            b"",
            Duration::from_secs(2),
        )
        .ok()
        .filter(|r| r.0 == 200)
    });
    let sampler = Sampler::start();

    // 1. Node: new Functions → first 200 (several, for the median), then source edits.
    let mut first = Vec::new();
    for i in 0..runs {
        let name = format!("node-{i}");
        let (took, image) = deploy_new(c, &node_fn(&ns, &name, "v1", "hi"), "node v1 hi", &reg);
        log(format!("{name}: apply → first 200 in {} ({image})", secs(took)));
        first.push(took);
        if i > 0 {
            c.kubectl_ok(&["delete", "function", "-n", &ns, &name, "--wait=false"], None);
        }
    }
    // The controller asked the nodes for their platforms (RBAC: nodes list) and, on this
    // single-architecture cluster, builds for the builder's own.
    let said = std::fs::read_to_string(&controller_log).unwrap_or_default();
    assert!(!said.contains("cannot list the nodes"), "{said}");
    let name = "node-0";
    let jobs_v1 = jobs_of(c, &ns, name);
    assert_eq!(jobs_v1.len(), 1, "{jobs_v1:?}");
    let job = c.get(&["job", "-n", &ns, jobs_v1.iter().next().unwrap()]);
    assert_eq!(job["status"]["succeeded"], 1);
    let pod_spec = &job["spec"]["template"]["spec"];
    assert_eq!(pod_spec["containers"][0]["image"], builder.as_str());
    assert!(
        !pod_spec["containers"][0]["args"].to_string().contains("--platform"),
        "{}",
        pod_spec["containers"][0]["args"]
    );
    assert_eq!(
        pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(pod_spec["securityContext"]["runAsUser"], 1000);
    let hpa = c.get(&["hpa", "-n", &ns, name]);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Function");
    let svc = c.get(&["service", "-n", &ns, name]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);

    let mut edits = Vec::new();
    let mut image = function_image(&function(c, &ns, name));
    for i in 2..runs + 2 {
        let v = format!("v{i}");
        let t = Instant::now();
        c.apply(&node_fn(&ns, name, &v, "hi"));
        let took = wait_answer(c, &ns, name, &format!("node {v} hi"), t);
        let f = wait_for("the new image in status", Duration::from_secs(30), || {
            let f = function(c, &ns, name);
            (all_true(&f) && function_image(&f) != image).then_some(f)
        });
        let new_image = function_image(&f);
        assert_ne!(new_image, image, "a new digest");
        image = new_image;
        log(format!("{name}: source edit {v} → new answer in {}", secs(took)));
        edits.push(took);
    }
    // Old build Jobs are removed: one Job, for the latest image.
    let jobs_now = wait_for("one build Job left", Duration::from_secs(30), || {
        let j = jobs_of(c, &ns, name);
        (j.len() == 1).then_some(j)
    });
    assert!(jobs_now.is_disjoint(&jobs_v1));

    // 2. Only an env var changes: no build, the Deployment rolls.
    let generation = c.get(&["deployment", "-n", &ns, name])["metadata"]["generation"]
        .as_i64()
        .unwrap();
    let t = Instant::now();
    c.apply(&node_fn(&ns, name, &format!("v{}", runs + 1), "hello"));
    let took = wait_answer(c, &ns, name, &format!("node v{} hello", runs + 1), t);
    log(format!("{name}: env edit → new answer in {} (no build)", secs(took)));
    assert_eq!(jobs_of(c, &ns, name), jobs_now, "an env change builds nothing");
    let d = c.get(&["deployment", "-n", &ns, name]);
    assert!(d["metadata"]["generation"].as_i64().unwrap() > generation);
    assert_eq!(function_image(&function(c, &ns, name)), image);

    // 3. Python with a dependency from PyPI.
    let reqs = "six==1.16.0\n";
    let (took, py_image) = deploy_new(c, &python_fn(&ns, "py", "v1", reqs), "python v1 six 1.16.0", &reg);
    log(format!("py: apply → first 200 in {} (pip install six)", secs(took)));

    // A source edit: the dependency layer comes from the registry cache (no pip install).
    let t = Instant::now();
    c.apply(&python_fn(&ns, "py", "v2", reqs));
    let took = wait_answer(c, &ns, "py", "python v2 six 1.16.0", t);
    log(format!(
        "py: source edit → new answer in {} (dependencies from the cache)",
        secs(took)
    ));
    let py_image = wait_for("the new python image in status", Duration::from_secs(30), || {
        let f = function(c, &ns, "py");
        let image = function_image(&f);
        (all_true(&f) && image != py_image).then_some(image)
    });
    let job = jobs_of(c, &ns, "py").into_iter().next().unwrap();
    let build_log = c.kubectl_ok(&["logs", "-n", &ns, &format!("job/{job}"), "--all-containers"], None);
    assert!(build_log.contains("\"hit-registry\""), "{build_log}");

    // 4. A dependency that cannot be installed: BuildReady=False with pip's error; v2 still serves.
    c.apply(&python_fn(&ns, "py", "v3", "six-fnbuild-no-such-package==1.0\n"));
    let (status, reason, message) = wait_for("BuildReady=False", BUILD_TIMEOUT, || {
        let f = function(c, &ns, "py");
        conditions(&f)
            .get("BuildReady")
            .filter(|(s, _, _)| s == "False")
            .cloned()
    });
    log(format!("py: failed build: BuildReady={status} {reason}: {message}"));
    assert_eq!(reason, "JobFailed");
    assert!(
        message.contains("six-fnbuild-no-such-package"),
        "the installer's error is in the message: {message}"
    );
    let f = function(c, &ns, "py");
    assert_eq!(function_image(&f), py_image, "the old image keeps running");
    assert_eq!(conditions(&f)["Running"].0, "True");
    let pods = ready_pods(c, &ns, "py");
    assert!(!pods.is_empty());
    for (pod, img) in &pods {
        assert_eq!(img, &py_image);
        assert_eq!(
            http_get_pod(c, &ns, pod),
            Some((200, "python v2 six 1.16.0".to_string()))
        );
    }

    // 4b. An install script that tries to steal the build's credentials: everything it can
    // read, /package-registry included (the Secret is mounted only in the download step, so the
    // scripts find nothing there; were it in reach, the builder's layer scan would refuse it);
    // then everything but that directory. Both builds succeed, and each image is searched for
    // the push credentials, the npm token and the cache key.
    for (suffix, dirs) in [
        (
            "attack",
            &["/docker-config", "/package-registry", "/handoff", "/tmp"][..],
        ),
        ("attack2", &["/docker-config", "/handoff", "/tmp"][..]),
    ] {
        let attack_ns = format!("{ns}-{suffix}");
        let took = install_script_attack(
            c,
            &attack_ns,
            &reg,
            &auth,
            || {
                c.apply(&cache_key_secret(&attack_ns));
            },
            &cache_key,
            dirs,
        );
        log(format!(
            "{attack_ns}: the install-script case ({dirs:?}) took {}",
            secs(took)
        ));
    }

    // 5. A git source the controller cannot reach (a closed port on the loopback address: no
    // traffic leaves the machine) is reported, naming the repository, and not built.
    let closed = format!("git://127.0.0.1:{}/fn.git", free_port());
    c.apply(&json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "from-git", "namespace": ns},
        "spec": {"runtime": "nodejs20", "source": {"gitRepository": {
            "url": closed, "baseDir": "orders-service/function", "reference": "main"}}}
    }));
    let (st, reason, message) = wait_for(
        "ConfigurationReady=False for an unreachable git source",
        Duration::from_secs(30),
        || {
            conditions(&function(c, &ns, "from-git"))
                .get("ConfigurationReady")
                .cloned()
        },
    );
    log(format!("from-git: ConfigurationReady={st} {reason}: {message}"));
    assert_eq!((st.as_str(), reason.as_str()), ("False", "SourceUpdateFailed"));
    assert!(
        message.contains(&closed) && message.contains("cannot reach it"),
        "{message}"
    );
    assert!(jobs_of(c, &ns, "from-git").is_empty());

    // 6. Deleting a Function deletes what it owns (kube-controller-manager's garbage collector).
    c.kubectl_ok(&["delete", "function", "-n", &ns, name], None);
    let t = Instant::now();
    wait_for(
        "the Function's objects to be garbage-collected",
        Duration::from_secs(60),
        || {
            let left = c.kubectl_ok(
                &[
                    "get",
                    "configmap,job,deployment,service,hpa",
                    "-n",
                    &ns,
                    "-l",
                    &format!("{FN_LABEL}={name}"),
                    "-o",
                    "name",
                ],
                None,
            );
            left.trim().is_empty().then_some(())
        },
    );
    log(format!("{name}: deleted; owned objects gone in {}", secs(t.elapsed())));
    // The stand-in for Kyma's publisher proxy and trace collector, for the scenarios of 7b.
    let proxy_ip = e2e_kyma::start_proxy_stand_in(c, &reg);
    drop(controller);

    // 7. The controller as the manifests' Deployment, in the builder image. The test cluster has
    // no kube-proxy: it uses the node's network and the API server's loopback address, and
    // serves the webhooks where the process did.
    let dep = c.get(&["deployment", "-n", "serverless-system", "fnbuild-controller"]);
    let mut args: Vec<String> = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for a in args.iter_mut() {
        if a.starts_with("--webhook-addr=") {
            *a = format!("--webhook-addr=127.0.0.1:{webhook_port}");
        } else if a.starts_with("--metrics-addr=") {
            *a = format!("--metrics-addr=127.0.0.1:{metrics_port}");
        } else if a.starts_with("--git-webhook-addr=") {
            *a = format!("--git-webhook-addr=127.0.0.1:{git_webhook_port}");
        } else if a.starts_with("--publisher-proxy-address=") {
            *a = format!("--publisher-proxy-address=http://{proxy_ip}:8080/publish");
        } else if a.starts_with("--trace-collector-endpoint=") {
            *a = format!("--trace-collector-endpoint=http://{proxy_ip}:8080/v1/traces");
        } else if a.starts_with("--git-poll-interval=") {
            // Git Functions (7c) are looked at every 15 s: a push is seen by polling alone within
            // that, and the push event's figure is not the poll's.
            *a = format!("--git-poll-interval={}", e2e_kyma::GIT_POLL_SECONDS);
        }
    }
    let json_patch = json!([
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
        {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args},
        {"op": "replace", "path": "/spec/template/spec/containers/0/ports", "value": [
            {"name": "webhook", "containerPort": webhook_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
            {"name": "git-webhook", "containerPort": git_webhook_port, "protocol": "TCP"}]},
        // The probes would dial the node's address, not the loopback one the server listens on:
        // the test asks /healthz itself.
        {"op": "remove", "path": "/spec/template/spec/containers/0/readinessProbe"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/livenessProbe"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_PORT", "value": c.apiserver_port.to_string()}},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]);
    c.kubectl_ok(
        &[
            "patch",
            "-n",
            "serverless-system",
            "deployment/fnbuild-controller",
            "--type=json",
            "-p",
            &json_patch.to_string(),
        ],
        None,
    );
    let t = Instant::now();
    wait_for(
        "the controller Deployment to be available",
        Duration::from_secs(120),
        || {
            let d = c.get(&["deployment", "-n", "serverless-system", "fnbuild-controller"]);
            (d["status"]["availableReplicas"].as_i64() == Some(1) && d["status"]["updatedReplicas"].as_i64() == Some(1))
                .then_some(())
        },
    );
    wait_for("the controller Pod's /healthz", Duration::from_secs(60), || {
        http_request_once(
            "GET",
            &format!("http://127.0.0.1:{metrics_port}/healthz"),
            &[],
            b"",
            Duration::from_secs(2),
        )
        .ok()
        .filter(|r| r.0 == 200)
    });
    log(format!("controller Deployment available in {}", secs(t.elapsed())));
    let (took, _) = deploy_new(
        c,
        &node_fn(&ns, "in-cluster", "v1", "from the Deployment"),
        "node v1 from the Deployment",
        &reg,
    );
    log(format!(
        "in-cluster: apply → first 200 in {} (controller in a Pod)",
        secs(took)
    ));
    let logs = c.kubectl_ok(
        &["logs", "-n", "serverless-system", "deployment/fnbuild-controller"],
        None,
    );
    assert!(
        logs.lines().any(|l| l.starts_with('{') && l.contains("in-cluster")),
        "JSON logs about the Function: {logs}"
    );
    // The webhooks are served by the Pod: an invalid Function is denied with the field path.
    let mut bad = node_fn(&ns, "bad", "v1", "x");
    bad["spec"]["env"] = json!([{"name": "FUNC_PORT", "value": "1"}]);
    let denied = c.kubectl(&["apply", "-f", "-"], Some(&bad.to_string()));
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("spec.env"), "{err}");
    // 7b. Kyma's e2e scenarios, the controller pointing Functions at the stand-in.
    e2e_kyma::kyma_scenarios(c, &reg);
    // 7c. Kyma's gitops scenario: a Function from git, rebuilt after a push.
    e2e_kyma::gitops(
        c,
        &reg,
        &format!("http://127.0.0.1:{git_webhook_port}"),
        &format!("http://127.0.0.1:{metrics_port}"),
    );
    c.scale_controller_deployment(0);

    // Figures.
    sampler_results(&sampler);
    log(format!(
        "apply → first 200: median {} of {} ({}); source edit → new answer: median {} of {} ({})",
        secs(median(&first)),
        first.len(),
        first.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(" "),
        secs(median(&edits)),
        edits.len(),
        edits.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(" "),
    ));
    log(format!("whole test: {}", secs(t_all.elapsed())));
}

fn sampler_results(s: &Sampler) {
    let r = s.results();
    if r.is_empty() {
        log("build Pods: no cgroup samples (containers not found under /sys/fs/cgroup/*/docker)");
        return;
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    for (name, u) in &r {
        log(format!(
            "build container {name}: CPU {:.0} ms, peak memory {:.1} MiB (cgroup max usage, with page cache), peak RSS {:.1} MiB",
            u.cpu_ns as f64 / 1e6,
            mib(u.max_usage),
            mib(u.peak_rss)
        ));
    }
    let max_usage = r.values().map(|u| u.max_usage).max().unwrap_or(0);
    let max_rss = r.values().map(|u| u.peak_rss).max().unwrap_or(0);
    let max_cpu = r.values().map(|u| u.cpu_ns).max().unwrap_or(0);
    log(format!(
        "build Pods ({}): max CPU {:.0} ms, max peak memory {:.1} MiB, max peak RSS {:.1} MiB",
        r.len(),
        max_cpu as f64 / 1e6,
        mib(max_usage),
        mib(max_rss)
    ));
}

// ---------------------------------------------------------------------------------------------
// The install-script attack

/// A root `postinstall` script (run by npm in the install step, as any Function author's would
/// be) that copies everything it can read under `dirs`, its environment and PID 1's into
/// `node_modules/stolen.txt`, which lands in the image's dependency layer. In JavaScript, since
/// the builder image has node but no coreutils; quoted for `sh -c` (no `"`, `$`, backquote).
fn stealing_script(dirs: &[&str]) -> String {
    let dirs = dirs.iter().map(|d| format!("'{d}'")).collect::<Vec<_>>().join(",");
    let js = format!(
        "const fs=require('fs'),path=require('path');let out='';\
         const walk=(p,depth)=>{{let st;try{{st=fs.statSync(p)}}catch(e){{out+='== '+p+': '+e.code+'\\n';return}}\
         if(st.isDirectory()){{if(depth>12)return;let names=[];try{{names=fs.readdirSync(p)}}catch(e){{out+='== '+p+': '+e.code+'\\n'}}\
         for(const n of names){{if(!n.startsWith('stolen'))walk(path.join(p,n),depth+1)}}}}\
         else if(st.isFile()&&out.length<4e6){{try{{out+='== '+p+'\\n'+fs.readFileSync(p).subarray(0,65536).toString('latin1')+'\\n'}}catch(e){{out+='== '+p+': '+e.code+'\\n'}}}}}};\
         for(const d of [{dirs}])walk(d,0);\
         out+='== env\\n'+Object.entries(process.env).map(e=>e[0]+'='+e[1]).join('\\n')+'\\n';\
         try{{out+='== /proc/1/environ\\n'+fs.readFileSync('/proc/1/environ','latin1').split(String.fromCharCode(0)).join('\\n')+'\\n'}}catch(e){{out+='== /proc/1/environ: '+e.code+'\\n'}}\
         fs.mkdirSync('node_modules',{{recursive:true}});fs.writeFileSync('node_modules/stolen.txt',out);"
    );
    assert!(!js.contains(['"', '$', '`']), "{js}");
    format!("node -e \"{js}\"")
}

/// The base64 forms of `s` at each of the three alignments it can have in a longer encoded text
/// (the characters that depend only on `s`).
fn base64_forms(s: &str) -> Vec<String> {
    (0..3)
        .map(|k| {
            let padded = format!("{}{s}", "\0".repeat(k));
            let enc = base64_std(&padded);
            let start = if k == 0 { 0 } else { 4 };
            enc[start..enc.len() - 4].to_string()
        })
        .collect()
}

/// Every blob of an OCI layout (gzip layers decompressed) in which one of `needles` occurs:
/// (blob, needle); and the text of any `stolen.txt` in a layer.
fn find_in_layout(dir: &Path, needles: &[String]) -> (Vec<(String, String)>, Option<String>) {
    use std::io::Read;
    let matcher = aho_corasick::AhoCorasick::new(needles).unwrap();
    let mut hits = Vec::new();
    let mut stolen = None;
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            let mut tar = tar::Archive::new(&out[..]);
            for e in tar.entries().unwrap() {
                let mut e = e.unwrap();
                if e.path().unwrap().ends_with("stolen.txt") {
                    let mut text = String::new();
                    e.read_to_string(&mut text).unwrap();
                    stolen = Some(text);
                }
            }
            out
        } else {
            raw
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // One pass over the blob for every needle (the test's own code is not optimised).
        for m in matcher.find_overlapping_iter(&bytes) {
            hits.push((name.clone(), needles[m.pattern().as_usize()].clone()));
        }
    }
    (hits, stolen)
}

/// A Function whose package.json runs [`stealing_script`] at install, in a namespace whose
/// registry Secret and package-registry Secret carry unique markers. Whatever the build does,
/// no marker (nor its base64) may reach the image or the Function's status: either the build
/// succeeds with the credentials out of the script's reach, or the builder's secret scan
/// refuses the layer and says which file, without the secret.
fn install_script_attack(
    c: &Cluster,
    ns: &str,
    reg: &str,
    real_auth: &str,
    add_cache_key: impl FnOnce(),
    cache_key: &str,
    dirs: &[&str],
) -> Duration {
    let t = Instant::now();
    let unique = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let npm_marker = format!("npm_FAKE{unique}npmtoken");
    let reg_marker = format!("fnbuildregmarker{unique}");
    let marker_auth = base64_std(&format!("attacker:{reg_marker}"));
    c.namespace(ns, json!({}));
    add_cache_key();
    // The push credentials the build needs, and a second entry holding the marker.
    let dockerconfig = json!({"auths": {
        reg: {"auth": real_auth},
        format!("{reg_marker}.invalid"): {"auth": marker_auth},
    }})
    .to_string();
    c.apply(&json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "serverless-registry-config-default", "namespace": ns},
        "stringData": {".dockerconfigjson": dockerconfig}
    }));
    // An npm token for a registry no build asks (a bogus token for registry.npmjs.org itself
    // would make npm's requests for left-pad fail with 401).
    c.apply(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "serverless-package-registry-config", "namespace": ns},
        "stringData": {".npmrc": format!("//npm.fnbuild-test.invalid/:_authToken={npm_marker}\n")}
    }));
    let package_json = json!({
        "name": "attack", "version": "1.0.0",
        "dependencies": {"left-pad": "1.3.0"},
        "scripts": {"postinstall": stealing_script(dirs)}
    })
    .to_string();
    let name = "attack";
    c.apply(&json!({
        "apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "nodejs20",
            "source": {"inline": {
                "source": "const leftPad = require('left-pad');\nmodule.exports = { main: () => 'attack ' + leftPad('x', 3, '.') };\n",
                "dependencies": package_json
            }},
            "resourceConfiguration": {"function": {"profile": "S"}}
        }
    }));
    let mut needles = vec![
        npm_marker.clone(),
        reg_marker.clone(),
        marker_auth.clone(),
        real_auth.to_string(),
        cache_key.to_string(),
    ];
    needles.extend(base64_forms(cache_key));
    needles.extend(base64_forms(&npm_marker));
    needles.extend(base64_forms(&reg_marker));
    // The push credentials as config.json holds them (`auth`, above) and in clear; their own
    // password is too short for base64 fragments that could not occur by chance.
    needles.push(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));

    // The build Pod: prepare and install as init containers, the install step without the push
    // credentials.
    let job = wait_for("the attack's build Job", Duration::from_secs(30), || {
        jobs_of(c, ns, name).into_iter().next()
    });
    let job = c.get(&["job", "-n", ns, &job]);
    let pod = &job["spec"]["template"]["spec"];
    let init: Vec<&str> = pod["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["prepare", "download", "install"]);
    let install = &pod["initContainers"][2];
    let install_mounts: Vec<&str> = install["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        !install_mounts
            .iter()
            .any(|m| ["registry-config", "tmp", "cache-key", "package-registry-config"].contains(m))
            && !install.to_string().contains("DOCKER_CONFIG"),
        "{install}"
    );

    let outcome = wait_for("the attack's build to end", BUILD_TIMEOUT, || {
        let f = function(c, ns, name);
        let conds = conditions(&f);
        if all_true(&f) {
            return Some(Ok(f));
        }
        conds
            .get("BuildReady")
            .filter(|(s, _, _)| s == "False")
            .map(|(_, _, m)| Err(m.clone()))
    });
    let f = function(c, ns, name);
    let status = f["status"].to_string();
    for n in &needles {
        assert!(
            !status.contains(n.as_str()),
            "the Function's status holds {n:?}: {status}"
        );
    }
    match outcome {
        Ok(f) => {
            let took = wait_answer(c, ns, name, "attack ..x", t);
            log(format!("{ns}/attack: Running, answers in {}", secs(took)));
            let image = function_image(&f);
            let dir = temp_dir("e2e-attack-");
            let layout = dir.path().join("oci");
            run_ok(Command::new("skopeo").args([
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"),
                &format!("docker://{image}"),
                &format!("oci:{}:attack", layout.display()),
            ]));
            let (hits, stolen) = find_in_layout(&layout, &needles);
            let stolen = stolen.expect("the install script ran: node_modules/stolen.txt is in the image");
            let seen: Vec<&str> = stolen.lines().filter(|l| l.starts_with("== /")).collect();
            log(format!(
                "{ns}/attack: the install script's stolen.txt ({} bytes) lists {} paths: {:?}",
                stolen.len(),
                seen.len(),
                seen.iter().take(40).collect::<Vec<_>>()
            ));
            assert!(hits.is_empty(), "secrets in the image: {hits:?}");
        }
        Err(message) => {
            log(format!("{ns}/attack: BuildReady=False: {message}"));
            assert!(
                message.contains("stolen.txt") || message.contains("node_modules/"),
                "the refusal names the file: {message}"
            );
        }
    }
    // Every step's log (the build step has none when an init step failed).
    let job_name = job["metadata"]["name"].as_str().unwrap();
    let mut logs = String::new();
    for step in ["prepare", "download", "install", "build"] {
        let out = c.kubectl(&["logs", "-n", ns, &format!("job/{job_name}"), "-c", step], None);
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(logs.contains("npm install"), "the install step's log: {logs}");
    for n in &needles {
        assert!(!logs.contains(n.as_str()), "the build's logs hold {n:?}");
    }
    t.elapsed()
}

/// On failure: the controller's log tail, the namespace's objects and events.
struct DumpOnPanic<'a> {
    cluster: &'a Cluster,
    ns: String,
    log: PathBuf,
}

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("--- controller log (last lines) ---");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
        for args in [
            vec!["get", "functions,jobs,pods,deployments", "-n", &self.ns, "-o", "wide"],
            vec!["get", "events", "-n", &self.ns, "--sort-by=.lastTimestamp"],
            vec!["get", "pods", "-n", "serverless-system", "-o", "wide"],
        ] {
            let out = self.cluster.kubectl(&args, None);
            eprintln!(
                "--- kubectl {} ---\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn base64_std(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
