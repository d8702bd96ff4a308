//! Checks the integration-test support itself (tests/common, tests/support/*.sh).
mod common;

use common::*;
use std::process::Command;

#[test]
fn base_images_unpack() {
    let b = base_images();
    let node = umoci_unpack(&b.node, NODE_TAG);
    let rootfs = node.path().join("rootfs");
    assert!(
        rootfs.join("usr/local/bin/node").is_file(),
        "no /usr/local/bin/node in the node base"
    );
    assert!(
        rootfs.join("usr/bin/node").exists(),
        "no /usr/bin/node in the node base"
    );
    let tmp_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(rootfs.join("tmp")).unwrap().permissions());
    assert_eq!(tmp_mode & 0o7777, 0o1777);
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.split(':').nth(2) == Some("1000")), "{passwd}");

    let python = umoci_unpack(&b.python, PYTHON_TAG);
    assert!(python.path().join("rootfs/usr/local/bin/python3").exists());
    assert!(python.path().join("rootfs/usr/bin/python3").exists());

    for r in [b.node_ref(), b.python_ref()] {
        let config = skopeo_inspect_config(&r);
        assert_eq!(config["architecture"], "amd64", "{r}");
        assert_eq!(config["os"], "linux", "{r}");
        let env = config["config"]["Env"].as_array().unwrap();
        assert!(
            env.iter().any(|e| e == "PATH=/usr/local/bin:/usr/bin:/bin"),
            "{r}: {env:?}"
        );
    }

    let raw = skopeo_inspect_raw(&b.node_docker_dir_ref());
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let archive = skopeo_inspect_config(&b.node_docker_archive_ref());
    assert_eq!(archive["architecture"], "amd64");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.node_docker_layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn registry_push_and_inspect() {
    let b = base_images();
    let reg = Registry::start();
    let (status, _, _) = http_get(&format!("{}/v2/", reg.url()));
    assert_eq!(status, 200);

    let pushed = reg.push_oci_layout(&b.node, NODE_TAG, "base/node:20");
    assert_eq!(pushed, format!("{}/base/node:20", reg.addr()));
    let config = skopeo_inspect_config(&format!("docker://{pushed}"));
    assert_eq!(config["architecture"], "amd64");
    let raw = skopeo_inspect_raw(&format!("docker://{pushed}"));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json");

    // The Docker-family copy stays v2s2 in the registry.
    let pushed = reg.push(&b.node_docker_dir_ref(), "base/docker-node:20");
    let raw = skopeo_inspect_raw(&format!("docker://{pushed}"));
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");

    let (status, headers, body) = http_get(&format!("{}/v2/_catalog", reg.url()));
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "content-type").unwrap_or("").contains("json"));
    assert!(
        body.contains("base/node") && body.contains("base/docker-node"),
        "{body}"
    );
}

#[test]
fn registry_htpasswd() {
    let b = base_images();
    let reg = Registry::start_htpasswd();
    let (status, headers, _) = http_get(&format!("{}/v2/", reg.url()));
    assert_eq!(status, 401);
    assert!(
        header(&headers, "www-authenticate").unwrap().starts_with("Basic"),
        "{headers:?}"
    );
    let pushed = reg.push_oci_layout(&b.python, PYTHON_TAG, "base/python:3.12");
    let config = skopeo_inspect_config_with(
        &format!("docker://{pushed}"),
        &["--creds", &format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")],
    );
    assert_eq!(config["os"], "linux");
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{pushed}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous inspect should be refused");
}

#[test]
fn docker_runs_the_bases() {
    let node = docker_load_node();
    let out = run_ok(docker().args([
        "run",
        "--rm",
        "--user",
        "1000",
        "--read-only",
        "--tmpfs",
        "/tmp",
        node,
        "node",
        "-e",
        "console.log(1)",
    ]));
    assert_eq!(out.trim(), "1");

    let python = docker_load_python();
    let out = run_ok(docker().args([
        "run",
        "--rm",
        "--user",
        "1000",
        "--read-only",
        "--tmpfs",
        "/tmp",
        python,
        "python3",
        "-c",
        "import json,http.server,asyncio; print(1)",
    ]));
    assert_eq!(out.trim(), "1");
}

#[test]
fn docker_detached_http() {
    let node = docker_load_node();
    let server = r#"require("http").createServer((q, s) => {
        let b = ""; q.on("data", d => b += d);
        q.on("end", () => { s.setHeader("X-Method", q.method); s.end(q.method === "POST" ? "got " + b : "hello"); });
    }).listen(8080)"#;
    let c = docker_run_detached_with(
        node,
        &["--user", "1000", "--read-only", "--tmpfs", "/tmp"],
        &["node", "-e", server],
        8080,
    );
    let (status, headers, body) = http_get(&format!("{}/x", c.url()));
    assert_eq!((status, body.as_str()), (200, "hello"), "{}", c.logs());
    assert_eq!(header(&headers, "x-method"), Some("GET"));
    let (status, _, body) = http_post(&c.url(), "text/plain", "abc");
    assert_eq!((status, body.as_str()), (200, "got abc"));
    assert!(c.running());
}
