//! The runtime libraries end to end: the packages Kyma's runtime images carry are importable
//! undeclared in images fnbuild builds (run by Docker, non-root, read-only root), in one layer
//! that is the same bytes for every function of a runtime and is pushed once; a function's own
//! version of a package wins; the layer is reproducible, and the steps of a build Job never
//! install it.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const NODE_HANDLER: &str = r#"
const axios = require('axios');
const express = require('express');
const { CloudEvent } = require('cloudevents');
const otel = require('@opentelemetry/api');
const version = (name) => require(name + '/package.json').version;
module.exports = {
  main: async function () {
    return {
      axios: axios.VERSION,
      express: version('express'),
      cloudevents: version('cloudevents'),
      otel: typeof otel.trace.getTracer,
      event: new CloudEvent({ type: 't', source: 's', id: '1' }).type,
      express_app: typeof express().listen,
    };
  },
};
"#;

const PYTHON_HANDLER: &str = r#"
import bottle, cloudevents, prometheus_client, requests
from importlib.metadata import version
from opentelemetry import trace

def main(event, context):
    return {
        "requests": requests.__version__,
        "bottle": bottle.__version__,
        "prometheus_client": version("prometheus_client"),
        "cloudevents": version("cloudevents"),
        "tracer": type(trace.get_tracer("t")).__name__ != "",
        "from": requests.__file__,
    }
"#;

/// The version the lock file pins for a package (package-lock.json or requirements.txt).
fn pinned(server: &str, package: &str) -> String {
    let dir = repo_root().join("runtimes").join(server).join("libraries");
    if server == "node" {
        let lock: Value = serde_json::from_slice(&std::fs::read(dir.join("package-lock.json")).unwrap()).unwrap();
        lock["packages"][format!("node_modules/{package}")]["version"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        let text = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
        let prefix = format!("{package}==");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
        line[prefix.len()..].split_whitespace().next().unwrap().to_string()
    }
}

fn function(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = temp_dir("libraries-fn-");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

/// `fnbuild build SRC --runtime R --base B --push REF --json`: the result.
fn build_push(src: &Path, runtime: &str, base: &str, image: &str, extra: &[&str]) -> Value {
    let mut cmd = fnbuild();
    cmd.arg("build")
        .arg(src)
        .args([
            "--runtime",
            runtime,
            "--base",
            base,
            "--push",
            image,
            "--json",
            "--quiet",
        ])
        .args(extra);
    serde_json::from_str(&run_ok(&mut cmd)).unwrap()
}

fn layer<'a>(result: &'a Value, role: &str) -> &'a Value {
    result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == role)
        .unwrap_or_else(|| panic!("no {role} layer: {result}"))
}

fn blob_outcome(result: &Value, digest: &Value) -> String {
    result["outputs"][0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| &b["digest"] == digest)
        .map(|b| b["outcome"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no blob {digest}: {result}"))
}

/// Runs the image as the tests run functions and returns GET / as JSON.
fn answer(image: &str) -> Value {
    let c = docker_run_detached(image, &["--read-only", "--tmpfs", "/tmp", "--user", "1000"]);
    let (status, _, body) = http_get(&format!("{}/", c.url()));
    assert_eq!(status, 200, "{body}\n{}", c.logs());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn kyma_libraries_are_importable_undeclared_from_one_shared_layer_pushed_once() {
    setup();
    let registry = Registry::start();
    let bases = base_images();
    let node = function(&[("handler.js", NODE_HANDLER)]);
    let other_node = function(&[("handler.js", &NODE_HANDLER.replace("typeof otel", "typeof  otel"))]);
    let python = function(&[("handler.py", PYTHON_HANDLER)]);

    let node24 = registry.push_oci_layout(bases.node_layout_for("24"), "24", "base/node:24");
    let node22 = registry.push_oci_layout(bases.node_layout_for("22"), "22", "base/node:22");
    // Builders share a cache repository (as a cluster's build Jobs do): the library layer is
    // kept there and every function's push mounts it.
    let cache_repo = registry.image("fnbuild-cache");
    let key_file = cache_key_file();
    let cache = [
        "--cache-repo",
        cache_repo.as_str(),
        "--cache-key-file",
        key_file.as_str(),
    ];
    let first = build_push(node.path(), "nodejs24", &node24, &registry.image("fn/a:1"), &cache);
    let second = build_push(
        other_node.path(),
        "nodejs24",
        &node24,
        &registry.image("fn/b:1"),
        &cache,
    );
    let on22 = build_push(node.path(), "nodejs22", &node22, &registry.image("fn/c:1"), &cache);
    // Without one, a function's next push finds it in its own repository.
    let again = build_push(other_node.path(), "nodejs24", &node24, &registry.image("fn/b:2"), &[]);

    let roles: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles[roles.len() - 3..],
        ["libraries", "runtime", "function"],
        "{first}"
    );
    let libs = &layer(&first, "libraries")["digest"];
    // One layer for every function of a runtime, and for nodejs22 and nodejs24 (one lock file).
    for later in [&second, &on22, &again] {
        assert_eq!(libs, &layer(later, "libraries")["digest"]);
    }
    let size = layer(&first, "libraries")["size"].as_u64().unwrap();
    for (name, result) in [("first", &first), ("second function", &second), ("nodejs22", &on22)] {
        let outcome = blob_outcome(result, libs);
        assert_eq!(
            outcome, "mounted",
            "{name}: the library layer, from the cache repository"
        );
        let uploaded = result["outputs"][0]["bytes_uploaded"].as_u64().unwrap();
        assert!(
            uploaded < size,
            "{name}: {uploaded} bytes uploaded, the library layer is {size}"
        );
    }
    assert_eq!(blob_outcome(&again, libs), "existed");
    // Under 10 MB compressed: what every node image adds, once per registry.
    let size = layer(&first, "libraries")["size"].as_u64().unwrap();
    assert!(size > 1_000_000 && size < 10_000_000, "{size}");

    for (result, major) in [(&first, "24"), (&on22, "22")] {
        let got = answer(result["outputs"][0]["image"].as_str().unwrap());
        assert_eq!(got["axios"], pinned("node", "axios"), "node {major}: {got}");
        assert_eq!(got["express"], pinned("node", "express"));
        assert_eq!(got["cloudevents"], pinned("node", "cloudevents"));
        assert_eq!(got["otel"], "function");
        assert_eq!(got["event"], "t");
        assert_eq!(got["express_app"], "function");
    }

    let py_base = registry.push_oci_layout(&bases.python, "3.12", "base/python:3.12");
    let py = build_push(python.path(), "python312", &py_base, &registry.image("fn/py:1"), &[]);
    let got = answer(py["outputs"][0]["image"].as_str().unwrap());
    assert_eq!(got["requests"], pinned("python", "requests"), "{got}");
    assert_eq!(got["bottle"], pinned("python", "bottle"));
    assert_eq!(got["prometheus_client"], pinned("python", "prometheus-client"));
    assert_eq!(got["cloudevents"], pinned("python", "cloudevents"));
    assert_eq!(got["from"], "/usr/src/app/libraries/requests/__init__.py");
}

#[test]
fn a_function_that_declares_its_own_version_of_a_library_gets_that_version() {
    setup();
    let registry = Registry::start();
    let bases = base_images();
    let handler = "module.exports = { main: () => ({ axios: require('axios').VERSION }) };\n";
    let node = function(&[
        ("handler.js", handler),
        (
            "package.json",
            r#"{"name":"fn","version":"1.0.0","dependencies":{"axios":"1.6.0"}}"#,
        ),
    ]);
    let base = registry.push_oci_layout(bases.node_layout_for("24"), "24", "base/node:24");
    let result = build_push(node.path(), "nodejs24", &base, &registry.image("fn/own-axios:1"), &[]);
    let got = answer(result["outputs"][0]["image"].as_str().unwrap());
    assert_eq!(
        got["axios"],
        "1.6.0",
        "the function's own axios, not the runtime's {}",
        pinned("node", "axios")
    );

    let python = function(&[
        (
            "handler.py",
            "import requests\ndef main(event, context):\n    return {'requests': requests.__version__}\n",
        ),
        ("requirements.txt", "requests==2.31.0\n"),
    ]);
    let base = registry.push_oci_layout(&bases.python, "3.12", "base/python:3.12");
    let result = build_push(
        python.path(),
        "python312",
        &base,
        &registry.image("fn/own-requests:1"),
        &[],
    );
    let got = answer(result["outputs"][0]["image"].as_str().unwrap());
    assert_eq!(got["requests"], "2.31.0", "the function's own requests");
}

#[test]
fn the_library_layer_is_reproducible_and_a_build_jobs_steps_never_install_it() {
    setup();
    // Made afresh (from PyPI) it is the same bytes as the shared store's.
    let fresh = temp_dir("libraries-store-");
    let out = run_ok(
        fnbuild()
            .args([
                "runtime-libraries",
                "--quiet",
                "--json",
                "--runtime",
                "python312",
                "--output",
            ])
            .arg(fresh.path()),
    );
    let made: Value = serde_json::from_str(out.trim()).unwrap();
    let copied = temp_dir("libraries-store-");
    let out = run_ok(
        fnbuild()
            .args(["runtime-libraries", "--quiet", "--json", "--output"])
            .arg(copied.path())
            .args(["--from", runtime_libraries()]),
    );
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l["runtime"].as_str().unwrap()).collect();
    assert_eq!(names, ["nodejs20", "nodejs22", "nodejs24", "python312"]);
    assert_eq!(lines[3]["digest"], made["digest"], "a fresh install is the same layer");
    assert_eq!(
        lines[0]["digest"], lines[2]["digest"],
        "the node runtimes share one layer"
    );
    // Readable by the builder image's user.
    for entry in std::fs::read_dir(copied.path().join("layers")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{mode:o}");
    }

    // A damaged store entry is never used: it is installed again instead.
    let blob = std::fs::read_dir(fresh.path().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "blob"))
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    // The prepare step of a Job (registry credentials in reach) with no store that has them:
    // one line, naming the way out, nothing installed.
    let empty_cache = temp_dir("libraries-cache-");
    let handoff = temp_dir("libraries-handoff-");
    let src = function(&[("handler.py", "def main(event, context):\n    return 'hi'\n")]);
    let out = Command::new(env!("CARGO_BIN_EXE_fnbuild"))
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "python312", "--base"])
        .arg(format!("oci:{}", base_images().python.display()))
        .arg("--runtime-libraries")
        .arg(fresh.path())
        .arg("--cache-dir")
        .arg(empty_cache.path())
        .arg("--prepare-dependencies")
        .arg(handoff.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: the python312 runtime's libraries: no store has them (")
            && last.contains("fnbuild runtime-libraries --output DIR"),
        "{stderr}"
    );
    assert!(!stderr.contains("pip install"), "nothing installed: {stderr}");
    assert!(
        std::fs::read_dir(handoff.path()).unwrap().next().is_none(),
        "nothing handed off"
    );
}
