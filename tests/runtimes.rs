//! The runtimes end to end: each function image is built by fnbuild, pushed to a real registry,
//! run by Docker as a non-root user on a read-only root filesystem, and spoken to over HTTP.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const NODE_HANDLER: &str = r#"
module.exports = {
  main: async function (event, context) {
    const url = new URL(event.extensions.request.url, 'http://localhost');
    switch (url.pathname) {
      case '/echo':
        return {
          data: event.data,
          ce: { type: event['ce-type'], source: event['ce-source'], id: event['ce-id'], specversion: event['ce-specversion'] },
          context: { name: context['function-name'], runtime: context.runtime, namespace: context.namespace },
        };
      case '/version':
        return process.version;
      case '/throw':
        throw new Error('handler exploded');
      case '/sleep':
        await new Promise((resolve) => setTimeout(resolve, Number(url.searchParams.get('ms'))));
        return 'slept';
      default:
        return 'Hello World!';
    }
  },
};
"#;

const PYTHON_HANDLER: &str = r#"
import platform
import time

def main(event, context):
    request = event["extensions"]["request"]
    if request.path == "/echo":
        return {
            "data": event["data"],
            "ce": {k: event.ceHeaders.get("ce-" + k) for k in ("type", "source", "id", "specversion")},
            "context": {"name": context["function-name"], "runtime": context["runtime"], "namespace": context["namespace"]},
        }
    if request.path == "/version":
        return platform.python_version()
    if request.path == "/throw":
        raise RuntimeError("handler exploded")
    if request.path == "/sleep":
        time.sleep(int(request.query["ms"]) / 1000)
        return "slept"
    return "Hello World!"
"#;

struct Case {
    runtime: &'static str,
    handler_file: &'static str,
    handler: &'static str,
    /// The base image's tag: Node's major version, or Python's.
    base_tag: &'static str,
}

impl Case {
    /// The OCI layout of the base, which carries the runtime's own interpreter version.
    fn base_layout(&self) -> String {
        let bases = base_images();
        let dir = if self.handler_file == "handler.py" {
            bases.python.clone()
        } else {
            bases.node_layout_for(self.base_tag)
        };
        dir.display().to_string()
    }

    /// What the handler's `/version` answers starts with: `v22.` or `3.12.`.
    fn version_prefix(&self) -> String {
        match self.handler_file {
            "handler.js" => format!("v{}.", self.base_tag),
            _ => format!("{}.", self.base_tag),
        }
    }
}

/// Every runtime, each on a base with its real interpreter: nodejs20 on the host's Node 20,
/// nodejs22 and nodejs24 on the official Node 22 and 24 binaries (make-base-images.sh).
fn cases() -> [Case; 4] {
    let node = |runtime, base_tag| Case {
        runtime,
        handler_file: "handler.js",
        handler: NODE_HANDLER,
        base_tag,
    };
    [
        node("nodejs20", "20"),
        node("nodejs22", "22"),
        node("nodejs24", "24"),
        Case {
            runtime: "python312",
            handler_file: "handler.py",
            handler: PYTHON_HANDLER,
            base_tag: "3.12",
        },
    ]
}

/// Builds `src` for the case's runtime with its base from `registry`, pushes it there; returns
/// `REF@DIGEST`. A deprecated runtime (nodejs20) must say so in exactly one warning line, the
/// others never.
fn build_and_push(registry: &Registry, case: &Case, src: &Path, name: &str) -> String {
    let (runtime, tag) = (case.runtime, case.base_tag);
    let base = registry.push_oci_layout(case.base_layout(), tag, &format!("base/{runtime}:{tag}"));
    let mut cmd = fnbuild();
    cmd.arg("build").arg(src).args([
        "--runtime",
        runtime,
        "--base",
        &base,
        "--push",
        &registry.image(&format!("{name}:latest")),
        "--json",
    ]);
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    assert_success(&cmd, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("deprecated")).collect();
    if runtime == "nodejs20" {
        assert!(
            warnings.len() == 1 && warnings[0].contains("WARN") && warnings[0].contains("nodejs24"),
            "{runtime}: one deprecation warning: {stderr}"
        );
    } else {
        assert!(warnings.is_empty(), "{runtime}: {stderr}");
    }
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    result["outputs"][0]["image"].as_str().unwrap().to_string()
}

fn run_function(image: &str, extra: &[&str]) -> Container {
    let mut args = vec![
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "1000",
        "-e",
        "FUNC_NAME=probe",
        "-e",
        "SERVICE_NAMESPACE=tests",
    ];
    args.extend_from_slice(extra);
    docker_run_detached(image, &args)
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn each_runtime_serves_the_function_contract() {
    let registry = Registry::start();
    for case in cases() {
        let rt = case.runtime;
        let src = temp_dir("fn-");
        std::fs::write(src.path().join(case.handler_file), case.handler).unwrap();
        let image = build_and_push(&registry, &case, src.path(), &format!("contract-{rt}"));
        let c = run_function(&image, &["-e", "FUNC_TIMEOUT=2", "-e", "FUNC_MEMFILE_MAX=1048576"]);
        let url = c.url();

        let (status, _, body) = http_get(&format!("{url}/"));
        assert_eq!((status, body.as_str()), (200, "Hello World!"), "{rt}: {}", c.logs());
        assert_eq!(http_get(&format!("{url}/healthz")).0, 200, "{rt}");
        // The handler runs on the runtime's own interpreter, not some other version.
        let (status, _, version) = http_get(&format!("{url}/version"));
        assert!(
            status == 200 && version.starts_with(&case.version_prefix()),
            "{rt}: {status} {version}"
        );

        let (status, headers, body) = http_post(&format!("{url}/echo"), "application/json", r#"{"a":[1,2]}"#);
        assert_eq!(status, 200, "{rt}: {body}");
        assert!(
            header(&headers, "content-type")
                .unwrap()
                .starts_with("application/json"),
            "{rt}: {headers:?}"
        );
        let echoed = json_body(&body);
        assert_eq!(echoed["data"], json!({"a": [1, 2]}), "{rt}");
        assert_eq!(
            echoed["context"],
            json!({"name": "probe", "runtime": rt, "namespace": "tests"}),
            "{rt}"
        );

        // A binary-mode CloudEvent: attributes in ce-* headers.
        let (status, _, body) = http_request(
            "POST",
            &format!("{url}/echo"),
            &[
                ("Content-Type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-type", "order.created"),
                ("ce-source", "/shop"),
                ("ce-id", "42"),
            ],
            br#"{"order":7}"#,
            Duration::from_secs(10),
        );
        assert_eq!(status, 200, "{rt}");
        let echoed = json_body(&body);
        assert_eq!(
            echoed["ce"],
            json!({"type": "order.created", "source": "/shop", "id": "42", "specversion": "1.0"}),
            "{rt}"
        );
        assert_eq!(echoed["data"], json!({"order": 7}), "{rt}");

        // A structured-mode CloudEvent: attributes in the JSON envelope.
        let envelope = r#"{"specversion":"1.0","type":"order.paid","source":"/pay","id":"43","datacontenttype":"application/json","data":{"order":8}}"#;
        let (status, _, body) = http_post(&format!("{url}/echo"), "application/cloudevents+json", envelope);
        assert_eq!(status, 200, "{rt}: {body}");
        let echoed = json_body(&body);
        assert_eq!(
            echoed["ce"],
            json!({"type": "order.paid", "source": "/pay", "id": "43", "specversion": "1.0"}),
            "{rt}"
        );
        assert_eq!(echoed["data"], json!({"order": 8}), "{rt}");

        let (status, _, body) = http_get(&format!("{url}/throw"));
        assert_eq!(status, 500, "{rt}");
        assert!(
            !body.contains("    at ") && !body.contains("Traceback"),
            "{rt}: stack trace in the body: {body}"
        );
        assert!(
            c.logs().contains("handler exploded"),
            "{rt}: the error is logged: {}",
            c.logs()
        );

        assert_eq!(http_get(&format!("{url}/sleep?ms=5000")).0, 408, "{rt}: FUNC_TIMEOUT=2");
        let big = vec![b'x'; 1_100_000];
        if case.handler_file == "handler.py" {
            // As Kyma's Python runtime: any body is taken; Bottle parses JSON up to FUNC_MEMFILE_MAX.
            assert_eq!(
                http_post(&format!("{url}/"), "text/plain", &big).0,
                200,
                "{rt}: no body limit"
            );
            let big_json = format!("\"{}\"", "x".repeat(1_100_000));
            assert_eq!(
                http_post(&format!("{url}/echo"), "application/json", big_json.as_bytes()).0,
                413,
                "{rt}: JSON over FUNC_MEMFILE_MAX"
            );
        } else {
            assert_eq!(
                http_post(&format!("{url}/echo"), "text/plain", &big).0,
                413,
                "{rt}: over REQ_MB_LIMIT=1"
            );
        }

        let (status, _, metrics) = http_get(&format!("{url}/metrics"));
        assert_eq!(status, 200, "{rt}");
        let calls: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("function_calls_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(calls >= 7.0, "{rt}: /metrics counts the requests made: {metrics}");
    }
}

#[test]
fn docker_stop_lets_the_request_in_flight_finish_and_exits_zero() {
    let registry = Registry::start();
    for case in cases() {
        let rt = case.runtime;
        let src = temp_dir("fn-");
        std::fs::write(src.path().join(case.handler_file), case.handler).unwrap();
        let image = build_and_push(&registry, &case, src.path(), &format!("stop-{rt}"));
        let c = run_function(&image, &[]);
        assert_eq!(http_get(&format!("{}/healthz", c.url())).0, 200);
        let url = format!("{}/sleep?ms=1500", c.url());
        let slow = std::thread::spawn(move || http_request_once("GET", &url, &[], b"", Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(400));
        run_ok(docker().args(["stop", "-t", "20", &c.id]));
        let (status, _, body) = slow
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{rt}: the request in flight failed: {e}"));
        assert_eq!((status, body.as_str()), (200, "slept"), "{rt}");
        let code = run_ok(docker().args(["inspect", "-f", "{{.State.ExitCode}}", &c.id]));
        assert_eq!(code.trim(), "0", "{rt}: {}", c.logs());
    }
}

#[test]
fn kyma_hello_world_examples_and_init_scaffolds_run_unchanged() {
    let registry = Registry::start();
    for case in cases() {
        let rt = case.runtime;
        // Kyma's documented hello world.
        let kyma = temp_dir("kyma-");
        let (file, source) = if case.handler_file == "handler.js" {
            (
                "handler.js",
                "module.exports = {\n  main: function (event, context) {\n    return \"Hello World!\";\n  }\n}\n",
            )
        } else {
            ("handler.py", "def main(event, context):\n    return \"Hello World!\"\n")
        };
        std::fs::write(kyma.path().join(file), source).unwrap();
        // And what `fnbuild init` writes.
        let scaffold = temp_dir("init-");
        let dir = scaffold.path().join("my-fn");
        run_ok(fnbuild().args(["init", "--runtime", rt]).arg(&dir));
        for (label, src) in [("kyma", kyma.path()), ("init", dir.as_path())] {
            let image = build_and_push(&registry, &case, src, &format!("{label}-{rt}"));
            let c = run_function(&image, &[]);
            let (status, _, body) = http_get(&c.url());
            assert_eq!(
                (status, body.as_str()),
                (200, "Hello World!"),
                "{rt} {label}: {}",
                c.logs()
            );
        }
    }
}

#[test]
fn init_refuses_a_directory_that_is_not_empty() {
    let dir = temp_dir("init-full-");
    std::fs::write(dir.path().join("mine.txt"), "keep").unwrap();
    let out = fnbuild()
        .args(["init", "--runtime", "nodejs20"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
