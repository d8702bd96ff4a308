//! `fnbuild-controller manifests` and `fnbuild-controller run` from the outside, and the admission webhooks
//! over real HTTPS (rustls, certificate from files), without a cluster.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::tls_pair;

use fnbuild_controller::manifests::{MUTATE_PATH, VALIDATE_PATH};
use serde_json::{json, Value};
use std::process::Command;

fn controller() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fnbuild-controller"))
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("not YAML: {e}\n{d}")))
        .collect()
}

#[test]
fn manifests_are_a_yaml_stream_the_controller_accepts() {
    let out = controller()
        .args([
            "manifests",
            "--namespace=fn-system",
            "--image=reg:5000/fnbuild:2",
            "--builder-image=reg:5000/fnbuild:2",
        ])
        .args([
            "--registry-push-address=reg:5000",
            "--registry-pull-address=localhost:5000",
            // Bare (the push registry), then a list that names it again.
            "--insecure-registry",
            "--insecure-registry=mirror.local:5000,reg:5000",
        ])
        .args(["--base-image=nodejs20=reg:5000/node:20", "--max-concurrent-builds=5"])
        .args(["--build-platforms=linux/arm64,linux/amd64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "ValidatingWebhookConfiguration"
        ]
    );
    let dep = &docs[6];
    assert_eq!(dep["metadata"]["namespace"], "fn-system");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "reg:5000/fnbuild:2");
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for want in [
        "--builder-image=reg:5000/fnbuild:2",
        "--registry-push-address=reg:5000",
        "--registry-pull-address=localhost:5000",
        "--insecure-registry=reg:5000",
        "--insecure-registry=mirror.local:5000",
        "--base-image=nodejs20=reg:5000/node:20",
        "--max-concurrent-builds=5",
        "--build-platforms=linux/amd64,linux/arm64",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert_eq!(
        docs[7]["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "fn-system"
    );

    // The Deployment's arguments parse: the controller gets past its flags and stops at the
    // missing certificate (exit 1, not 2 for bad usage).
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&String> = args
        .iter()
        .filter(|a| {
            !a.starts_with("--metrics-addr") && !a.starts_with("--webhook-addr") && !a.starts_with("--git-webhook-addr")
        })
        .collect();
    let out = controller()
        .args(&args)
        .args([
            "--metrics-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
            "--git-webhook-addr=127.0.0.1:0",
        ])
        .env("KUBECONFIG", dir.path().join("none"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/etc/fnbuild/webhook/tls.crt"), "{stderr}");
}

#[test]
fn controller_flags_are_checked() {
    let out = controller()
        .args(["run", "--default-function-profile=XXL"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-function-profile XXL: use XS, S, M, L or XL"));
    let out = controller()
        .args(["run", "--build-platforms=linux/amd64,arm64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--build-platforms arm64: "), "{stderr}");
    let out = controller()
        .args(["run", "--tls-cert=/x", "--metrics-addr=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give both --tls-cert and --tls-key"));
    let out = controller().args(["manifests", "--tls-cert=/x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
}

/// The spellings of the days when builder and controller were one program still work:
/// `fnbuild manifests` and `fnbuild controller` run fnbuild-controller (beside fnbuild).
#[test]
fn the_old_spellings_run_the_controller_program() {
    let args = ["--image=reg:5000/fnbuild:2", "--builder-image=reg:5000/fnbuild:2"];
    let new = controller().arg("manifests").args(args).output().unwrap();
    let old = Command::new(common::fnbuild_bin())
        .arg("manifests")
        .args(args)
        .output()
        .unwrap();
    assert!(
        new.status.success() && old.status.success(),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    assert!(!new.stdout.is_empty());
    assert_eq!(
        old.stdout, new.stdout,
        "fnbuild manifests prints what fnbuild-controller manifests does"
    );

    let old = Command::new(common::fnbuild_bin())
        .args(["controller", "--default-function-profile=XXL"])
        .output()
        .unwrap();
    assert_eq!(old.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&old.stderr).contains("--default-function-profile XXL: use XS, S, M, L or XL"));
    let help = Command::new(common::fnbuild_bin())
        .args(["controller", "--help"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Usage: fnbuild-controller run"),
        "the controller's own help: {}",
        String::from_utf8_lossy(&help.stdout)
    );
}

fn review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0e0f3a1b-0000-4000-8000-000000000001",
            "kind": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "kind": "Function"},
            "resource": {"group": "serverless.kyma-project.io", "version": "v1alpha2", "resource": "functions"},
            "name": "hello", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "admin"}, "object": object, "dryRun": false
        }
    })
}

#[tokio::test]
async fn webhooks_over_https() {
    fnbuild_controller::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_pair(dir.path());
    let tls = fnbuild_controller::http::tls_acceptor(&cert, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let metrics = std::sync::Arc::new(fnbuild_controller::metrics::Metrics::default());
    tokio::spawn(fnbuild_controller::webhook::serve(listener, tls, metrics.clone()));

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let http = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");

    let bad = json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "Hello", "namespace": "default"},
        "spec": {"runtime": "nodejs20", "source": {"inline": {"source": "x"}, "gitRepository": {"url": "https://x"}},
                 "env": [{"name": "MOD_NAME", "value": "x"}]}});
    let r: Value = http
        .post(url(VALIDATE_PATH))
        .json(&review(bad))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["response"]["uid"], "0e0f3a1b-0000-4000-8000-000000000001");
    assert_eq!(r["response"]["allowed"], false);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    for part in [
        "metadata.name: 'Hello'",
        "spec.source: set exactly one of inline and gitRepository",
        "spec.env[0].name: MOD_NAME is reserved",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }

    let good = json!({"apiVersion": "serverless.kyma-project.io/v1alpha2", "kind": "Function",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"runtime": "python312", "source": {"inline": {"source": "def main(e, c): return 'hi'"}}}});
    let r: Value = http
        .post(url(MUTATE_PATH))
        .json(&review(good.clone()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["response"]["allowed"], true);
    assert!(
        r["response"]["patch"].is_null(),
        "no default is written into a Function: {r}"
    );
    let r: Value = http
        .post(url(VALIDATE_PATH))
        .json(&review(good))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["response"]["allowed"], true);

    // A renewed certificate (the Secret's files replaced) is served from the next handshake on.
    let old_ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let renewed = tempfile::tempdir().unwrap();
    let (cert2, key2) = tls_pair(renewed.path());
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    let new_ca = reqwest::Certificate::from_pem(&std::fs::read(&cert2).unwrap()).unwrap();
    let fresh = |ca: reqwest::Certificate| reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let ok = fresh(new_ca)
        .post(url(MUTATE_PATH))
        .json(&review(json!({})))
        .send()
        .await;
    assert!(ok.is_ok(), "the renewed certificate is served: {ok:?}");
    assert!(
        fresh(old_ca)
            .post(url(MUTATE_PATH))
            .json(&review(json!({})))
            .send()
            .await
            .is_err(),
        "the old one is not"
    );

    // Plain HTTP is refused: the listener speaks TLS only.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}{VALIDATE_PATH}"))
        .await
        .is_err());
    let m = metrics.render();
    assert_eq!(
        fnbuild_controller::metrics::sample(&m, "fnbuild_webhook_requests_total{result=\"denied\"}"),
        Some(1.0)
    );
    assert_eq!(
        fnbuild_controller::metrics::sample(&m, "fnbuild_webhook_requests_total{result=\"allowed\"}"),
        Some(3.0)
    );
}

/// The controller stops within seconds of SIGTERM even while the API server does not answer
/// (its graceful stop alone would wait on requests that never end).
#[test]
fn sigterm_stops_the_controller_while_the_api_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\n  name: c\ncontexts:\n- context: {{cluster: c, user: u}}\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = controller()
        .args([
            "run",
            "--builder-image=x",
            "--registry-push-address=127.0.0.1:5000",
            "--registry-pull-address=127.0.0.1:5000",
            "--metrics-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
            "--no-registry-check",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Running: it has tried the API server and is retrying.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("initial object list")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let t = std::time::Instant::now();
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(15) {
            let _ = child.kill();
            panic!("still running 15 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(8), "{:?}", t.elapsed());
}
