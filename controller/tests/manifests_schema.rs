//! Every object fnbuild generates, checked against the published Kubernetes JSON schemas by a
//! tool nobody here wrote: PyPI's `kubernetes-validate` (installed by
//! tests/support/kubernetes-validate.sh), in strict mode (unknown fields are errors), for the
//! oldest, a middle and the newest Kubernetes version it carries. kube-apiserver 1.20 checks
//! the same objects by server-side dry run in tests/controller_cluster.rs.
//!
//! Objects: `fnbuild-controller manifests` (CRD, RBAC, the controller's Deployment and Service, webhook
//! configurations; with and without a TLS Secret and an external webhook URL) and every object
//! the controller creates for a Function (objects::desired_objects).

#[path = "../../tests/common/mod.rs"]
mod common;
mod objects;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{assert_success, fnbuild_controller_bin, repo_root, target_dir, tls_pair};

const VERSIONS: [&str; 3] = ["1.25.0", "1.30.0", "1.37.0"];

/// `PYTHON -m kubernetes_validate`, installed once.
fn validator() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/support/kubernetes-validate.sh"))
            .arg(target_dir().join("tools"))
            .output()
            .expect("run tests/support/kubernetes-validate.sh");
        assert!(
            out.status.success(),
            "kubernetes-validate.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

struct Report {
    ok: bool,
    passed: usize,
    /// WARN (e.g. no schema for the kind), ERROR and FATAL lines.
    problems: Vec<String>,
}

/// Validates each file, strictly, against every version in [`VERSIONS`].
fn validate(files: &[PathBuf]) -> Report {
    let mut cmd = Command::new(validator());
    cmd.args(["-m", "kubernetes_validate", "--strict"]);
    for v in VERSIONS {
        cmd.args(["-k", v]);
    }
    cmd.args(files);
    let out = cmd.output().expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Report {
        ok: out.status.success(),
        passed: stdout
            .lines()
            .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
            .count(),
        problems: stdout
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .filter(|l| !l.starts_with("INFO "))
            .map(str::to_string)
            .collect(),
    }
}

fn assert_all_pass(files: &[PathBuf], objects: usize) {
    let r = validate(files);
    assert!(
        r.ok && r.problems.is_empty() && r.passed == objects * VERSIONS.len(),
        "kubernetes-validate: {} of {} checks passed; problems:\n{}",
        r.passed,
        objects * VERSIONS.len(),
        r.problems.join("\n")
    );
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

#[test]
fn controller_objects_match_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects::desired_objects();
    let kinds: std::collections::BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "Service"]
    );
    let files: Vec<PathBuf> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| write_json(dir.path(), &format!("{i}"), o))
        .collect();
    assert_all_pass(&files, objects.len());

    // The check can fail: a wrong type and an unknown field are both reported.
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let mut wrong_type = deployment.clone();
    wrong_type["spec"]["replicas"] = "two".into();
    let mut unknown_field = deployment.clone();
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always".into();
    for (what, broken) in [
        ("a string replica count", wrong_type),
        ("a misspelt field", unknown_field),
    ] {
        let r = validate(&[write_json(dir.path(), "broken", &broken)]);
        assert!(
            !r.ok && r.problems.iter().filter(|l| l.starts_with("ERROR ")).count() == VERSIONS.len(),
            "{what} was not reported: {:?}",
            r.problems
        );
    }
}

#[test]
fn fnbuild_manifests_match_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_pair(dir.path());
    let variants: [(&str, Vec<String>); 3] = [
        ("default", vec![]),
        (
            "with-tls",
            vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
                "--namespace".into(),
                "fn-system".into(),
                "--image".into(),
                "127.0.0.1:5000/fnbuild:1".into(),
            ],
        ),
        (
            "external-webhook",
            vec![
                "--webhook-url".into(),
                "https://127.0.0.1:9443".into(),
                "--ca-bundle".into(),
                cert.display().to_string(),
            ],
        ),
    ];
    for (name, args) in variants {
        let mut cmd = std::process::Command::new(fnbuild_controller_bin());
        cmd.arg("manifests").args(&args);
        let out = cmd.output().unwrap();
        assert_success(&cmd, &out);
        let yaml = String::from_utf8(out.stdout).unwrap();
        let documents = yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---\n"));
        let kinds: Vec<&str> = yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
        assert_eq!(kinds.len(), documents, "{name}: one kind per document");
        for want in [
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "ValidatingWebhookConfiguration",
        ] {
            assert!(kinds.contains(&want), "{name}: no {want} in {kinds:?}");
        }
        assert_eq!(kinds.contains(&"Secret"), name == "with-tls", "{name}: {kinds:?}");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &yaml).unwrap();
        assert_all_pass(&[path], documents);
    }
}
