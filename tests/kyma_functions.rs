//! Kyma's own Functions, unchanged, in images fnbuild builds: its end-to-end Functions
//! (kyma-project/serverless `tests/serverless`) and documented samples, kept with what Kyma's
//! assertions expect in `tests/fixtures/kyma/<node|python>/<name>/expect.json` (the format is in
//! that directory's README). Each is built by fnbuild (nodejs24 on Node 24, python312 on Python
//! 3.12), run by Docker as Kyma runs it (non-root, read-only root), on the host's network so that
//! the Functions reach each other and the stand-ins this test starts on 127.0.0.1: an HTTP
//! server that records the headers it receives (Kyma's `http-server`) and an OTLP/HTTP receiver
//! (TRACE_COLLECTOR_ENDPOINT). The runtimes' own suites (runtimes/*/test) run the same fixtures
//! on the host and look into the spans more closely; here the point is the image.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a stand-in answers to a request (its path and headers).
type Answer = fn(&str, &BTreeMap<String, String>) -> String;

/// A stand-in server on 127.0.0.1: answers every request with JSON from `answer` and records
/// what came.
struct StandIn {
    port: u16,
    /// Each request's headers (lower-cased names) and body.
    received: Arc<Mutex<Vec<(BTreeMap<String, String>, Vec<u8>)>>>,
}

/// Kyma's `http-server` (Python fixtures).
fn http_server_answer(_: &str, _: &BTreeMap<String, String>) -> String {
    r#"{"name": "http-server"}"#.into()
}

/// The Node fixtures' trace target: the trace headers of the request it got.
fn trace_target_answer(path: &str, h: &BTreeMap<String, String>) -> String {
    let field = |k: &str| h.get(k).cloned().unwrap_or_default();
    serde_json::json!({
        "path": path,
        "traceparent": field("traceparent"),
        "x-b3-traceid": field("x-b3-traceid"),
        "x-b3-spanid": field("x-b3-spanid"),
        "x-b3-sampled": field("x-b3-sampled"),
    })
    .to_string()
}

fn otlp_answer(_: &str, _: &BTreeMap<String, String>) -> String {
    "{}".into()
}

impl StandIn {
    fn start(answer: Answer) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = BTreeMap::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                                break;
                            }
                            if let Some((n, v)) = h.split_once(':') {
                                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let len = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                            loop {
                                let mut size = String::new();
                                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                                    return;
                                }
                                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                                    .unwrap_or(0);
                                let mut chunk = vec![0; n + 2]; // the data and its CRLF
                                if reader.read_exact(&mut chunk).is_err() {
                                    return;
                                }
                                if n == 0 {
                                    break;
                                }
                                body.extend_from_slice(&chunk[..n]);
                            }
                        }
                        let answer = answer(&path, &headers);
                        log.lock().unwrap().push((headers, body));
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        let mut out = &stream;
                        if out.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StandIn { port, received }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }
}

struct Fixture {
    server: &'static str,
    name: String,
    dir: PathBuf,
    expect: Value,
}

fn fixtures() -> Vec<Fixture> {
    let mut all = Vec::new();
    for server in ["node", "python"] {
        let root = repo_root().join("tests/fixtures/kyma").join(server);
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("expect.json").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let expect: Value = serde_json::from_slice(&std::fs::read(dir.join("expect.json")).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            all.push(Fixture {
                server,
                name: dir.file_name().unwrap().to_str().unwrap().to_string(),
                dir,
                expect,
            });
        }
    }
    all
}

/// A running Function on the host's network, listening on its own port.
struct Running {
    container: Container,
    url: String,
}

fn start(image: &str, name: &str, env: &[(String, String)]) -> Running {
    let port = free_port();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    for (k, v) in [
        ("FUNC_PORT".to_string(), port.to_string()),
        ("FUNC_NAME".to_string(), name.to_string()),
        ("SERVICE_NAMESPACE".to_string(), "tests".to_string()),
    ]
    .into_iter()
    .chain(env.iter().cloned())
    {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(image.into());
    let id = run_ok(docker().args(&args)).trim().to_string();
    let container = Container { id, port };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_request_once("GET", &format!("{url}/healthz"), &[], b"", Duration::from_secs(2))
        .is_ok_and(|r| r.0 == 200)
    {
        assert!(
            container.running() && Instant::now() < deadline,
            "{name} did not start:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Running { container, url }
}

/// `{{name}}` in an env value: another Function's or a stand-in's base URL.
fn resolve(value: &str, urls: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, url) in urls {
        out = out.replace(&format!("{{{{{name}}}}}"), url);
    }
    // The Node fixtures' spelling.
    let url = |name: &str| urls.get(name).cloned().unwrap_or_default();
    out = out
        .replace("${RUNTIME}", "nodejs24")
        .replace("${PUBLISHER_PROXY}", &url("publisher-proxy-mock"))
        .replace("${TRACE_TARGET}", &url("http-server"))
        .replace("${OTLP}", &url("otlp"));
    assert!(!out.contains("${"), "unknown placeholder in {value}");
    assert!(!out.contains("{{"), "unknown placeholder in {value}");
    out
}

fn env_of(expect: &Value, urls: &BTreeMap<String, String>) -> Vec<(String, String)> {
    expect["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), resolve(v.as_str().unwrap(), urls)))
                .collect()
        })
        .unwrap_or_default()
}

fn matches_field(want: &Value, got: &Value) -> bool {
    match want.as_str() {
        Some("<uuid>") => got.as_str().is_some_and(|s| {
            s.len() == 36
                && s.chars().filter(|c| *c == '-').count() == 4
                && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }),
        Some("<rfc3339>") => got
            .as_str()
            .is_some_and(|s| s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')),
        _ => want == got,
    }
}

/// Sends one request of a fixture and checks Kyma's expectation; a description of what differs.
fn check(url: &str, req: &Value) -> Result<(), String> {
    let method = req["method"].as_str().unwrap();
    let path = req["path"].as_str().unwrap();
    let mut headers: Vec<(String, String)> = req["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body = if let Some(json) = req.get("json") {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        json.to_string()
    } else {
        req["body"].as_str().unwrap_or("").to_string()
    };
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, got_headers, got_body) = http_request(
        method,
        &format!("{url}{path}"),
        &hs,
        body.as_bytes(),
        Duration::from_secs(10),
    );
    let expect = &req["expect"];
    let what = format!(
        "{method} {path}: got {status} {:?} {got_body:?}",
        header(&got_headers, "content-type")
    );
    if expect["status"].as_u64() != Some(status as u64) {
        return Err(format!("{what}; want status {}", expect["status"]));
    }
    if let Some(ct) = expect["content_type"].as_str() {
        if header(&got_headers, "content-type") != Some(ct) {
            return Err(format!("{what}; want Content-Type {ct}"));
        }
    }
    if let Some(b) = expect["body"].as_str() {
        if got_body != b {
            return Err(format!("{what}; want body {b:?}"));
        }
    }
    let parsed = || serde_json::from_str::<Value>(&got_body).map_err(|e| format!("{what}; not JSON: {e}"));
    if let Some(j) = expect.get("json") {
        if &parsed()? != j {
            return Err(format!("{what}; want JSON {j}"));
        }
    }
    if let Some(fields) = expect["json_fields"].as_object() {
        let got = parsed()?;
        for (k, want) in fields {
            if !matches_field(want, &got[k]) {
                return Err(format!("{what}; want {k} = {want}"));
            }
        }
    }
    for s in expect["contains"].as_array().into_iter().flatten() {
        if !got_body.contains(s.as_str().unwrap()) {
            return Err(format!("{what}; want it to contain {s}"));
        }
    }
    Ok(())
}

/// One step of a Node fixture (`{request, expect}`, the format of tests/fixtures/kyma/node).
fn check_step(url: &str, step: &Value, logs: &dyn Fn() -> String) -> Result<(), String> {
    let req = &step["request"];
    let expect = &step["expect"];
    let method = req["method"].as_str().unwrap_or("GET");
    let path = req["path"].as_str().unwrap_or("/");
    let headers: Vec<(String, String)> = req["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = req["body"].as_str().unwrap_or("");
    let (status, got_headers, got_body) = http_request(
        method,
        &format!("{url}{path}"),
        &hs,
        body.as_bytes(),
        Duration::from_secs(10),
    );
    let what = format!("{method} {path}: got {status} {got_body:?}");
    if expect["status"].as_u64().is_some_and(|s| s != status as u64) {
        return Err(format!("{what}; want status {}", expect["status"]));
    }
    if let Some(b) = expect["body"].as_str() {
        if got_body != b {
            return Err(format!("{what}; want body {b:?}"));
        }
    }
    for (name, want) in expect["headers"].as_object().into_iter().flatten() {
        let got = header(&got_headers, name);
        if got != want.as_str() {
            return Err(format!("{what}; want header {name} {want}, got {got:?}"));
        }
    }
    let parsed = || serde_json::from_str::<Value>(&got_body).map_err(|e| format!("{what}; not JSON: {e}"));
    if let Some(j) = expect.get("json") {
        if &parsed()? != j {
            return Err(format!("{what}; want JSON {j}"));
        }
    }
    for (k, want) in expect["jsonHas"].as_object().into_iter().flatten() {
        let want = match want.as_str() {
            Some(w) => Value::String(w.replace("${RUNTIME}", "nodejs24")),
            None => want.clone(),
        };
        if parsed()?[k] != want {
            return Err(format!("{what}; want {k} = {want}"));
        }
    }
    for (k, part) in expect["jsonContains"].as_object().into_iter().flatten() {
        if !parsed()?[k]
            .as_str()
            .is_some_and(|v| v.contains(part.as_str().unwrap()))
        {
            return Err(format!("{what}; want {k} to contain {part}"));
        }
    }
    for k in expect["jsonNonEmpty"].as_array().into_iter().flatten() {
        if !parsed()?[k.as_str().unwrap()].as_str().is_some_and(|v| !v.is_empty()) {
            return Err(format!("{what}; want {k} non-empty"));
        }
    }
    for (k, format) in expect["jsonFormat"].as_object().into_iter().flatten() {
        let want = Value::String(format!("<{}>", format.as_str().unwrap()));
        if !matches_field(&want, &parsed()?[k]) {
            return Err(format!("{what}; want {k} to be a {format}"));
        }
    }
    if let Some(text) = expect["log"].as_str() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !logs().contains(text) {
            if Instant::now() > deadline {
                return Err(format!("{what}; want the log to contain {text:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Whether the OTLP receiver got every trace id (hex in OTLP/JSON, 16 raw bytes in protobuf)
/// and every span name.
fn spans_arrived(otlp: &StandIn, spans: &Value) -> Result<(), String> {
    let bodies: Vec<Vec<u8>> = otlp.requests().into_iter().map(|(_, b)| b).collect();
    let has = |needle: &[u8]| bodies.iter().any(|b| b.windows(needle.len()).any(|w| w == needle));
    for id in spans["trace_ids"].as_array().into_iter().flatten() {
        let id = id.as_str().unwrap();
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        if !has(id.as_bytes()) && !has(&raw) {
            let sample = otlp
                .requests()
                .first()
                .map(|(h, b)| format!("{h:?} {:?}", String::from_utf8_lossy(&b[..b.len().min(300)])));
            return Err(format!(
                "no span of trace {id} among {} OTLP requests (first: {sample:?})",
                bodies.len()
            ));
        }
    }
    for name in spans["names"].as_array().into_iter().flatten() {
        if !has(name.as_str().unwrap().as_bytes()) {
            return Err(format!("no span named {name}"));
        }
    }
    Ok(())
}

#[test]
fn kyma_e2e_functions_and_samples_answer_as_kyma_asserts() {
    setup();
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 8,
        "Kyma's Functions are in tests/fixtures/kyma: {}",
        fixtures.len()
    );
    let registry = Registry::start();
    let bases = base_images();
    let node_base = registry.push_oci_layout(bases.node_layout_for("24"), "24", "base/node:24");
    let python_base = registry.push_oci_layout(&bases.python, "3.12", "base/python:3.12");

    // Built first, each once (a fixture can be started by others as a dependency).
    let mut images: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in &fixtures {
        let (runtime, base) = match f.server {
            "node" => ("nodejs24", &node_base),
            _ => ("python312", &python_base),
        };
        let mut cmd = fnbuild();
        cmd.arg("build")
            .arg(&f.dir)
            .args(["--runtime", runtime, "--base", base, "--quiet", "--json"])
            .arg("--push")
            .arg(registry.image(&format!("kyma/{}-{}:1", f.server, f.name)));
        let result: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        images.insert(
            (f.server.into(), f.name.clone()),
            result["outputs"][0]["image"].as_str().unwrap().into(),
        );
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for f in &fixtures {
        let http_server = StandIn::start(if f.server == "node" {
            trace_target_answer
        } else {
            http_server_answer
        });
        let otlp = StandIn::start(otlp_answer);
        let mut urls = BTreeMap::from([
            ("http-server".to_string(), http_server.url()),
            ("otlp".to_string(), otlp.url()),
        ]);
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let by_name = |name: &str| {
            fixtures
                .iter()
                .find(|g| g.server == f.server && g.name == name)
                .unwrap_or_else(|| panic!("{}: needs {name}, which is no fixture", f.name))
        };
        let is_fixture = |n: &&Value| {
            fixtures
                .iter()
                .any(|g| g.server == f.server && Some(g.name.as_str()) == n.as_str())
        };
        let needs = f.expect["needs"].as_array().into_iter().flatten();
        let stand_in_fixtures = f.expect["standIns"].as_array().into_iter().flatten().filter(is_fixture);
        for need in needs.chain(stand_in_fixtures) {
            let need = by_name(need.as_str().unwrap());
            let image = &images[&(f.server.to_string(), need.name.clone())];
            let r = start(image, &need.name, &env_of(&need.expect, &urls));
            urls.insert(need.name.clone(), r.url.clone());
            running.insert(need.name.clone(), r);
        }
        let image = &images[&(f.server.to_string(), f.name.clone())];
        let me = start(image, &f.name, &env_of(&f.expect, &urls));
        let label = format!("{}/{}", f.server, f.name);
        let mut fail = |e: String, logs: &str| failures.push(format!("{label}: {e}\n--- log\n{logs}"));
        for req in f.expect["requests"].as_array().into_iter().flatten() {
            checked += 1;
            if let Err(e) = check(&me.url, req) {
                fail(e, &me.container.logs());
            }
        }
        for step in f.expect["steps"].as_array().into_iter().flatten() {
            checked += 1;
            let (url, container) = match step["target"].as_str() {
                Some(t) => (&running[t].url, &running[t].container),
                None => (&me.url, &me.container),
            };
            let tries = step["retry"].as_u64().unwrap_or(1).max(1);
            let mut result = Err(String::new());
            for _ in 0..tries {
                result = check_step(url, step, &|| container.logs());
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            if let Err(e) = result {
                fail(e, &container.logs());
            }
            if let Some(spans) = step["expect"].get("spans") {
                checked += 1;
                let want = serde_json::json!({"trace_ids": [spans["traceId"]], "names": spans["names"].as_array().cloned().unwrap_or_default()});
                let deadline = Instant::now() + Duration::from_secs(10);
                let result = loop {
                    match spans_arrived(&otlp, &want) {
                        Ok(()) => break Ok(()),
                        Err(e) if Instant::now() > deadline => break Err(e),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                };
                if let Err(e) = result {
                    fail(e, &me.container.logs());
                }
            }
        }
        for req in f.expect["then"].as_array().into_iter().flatten() {
            checked += 1;
            let other = &running[req["fixture"].as_str().unwrap()];
            if let Err(e) = check(&other.url, req) {
                fail(e, &other.container.logs());
            }
        }
        if let Some(wanted) = f.expect["http_server_received"].as_object() {
            checked += 1;
            let got = http_server.requests();
            let present = wanted["headers_present"].as_array().unwrap();
            let ok = got.iter().any(|(h, _)| {
                present.iter().all(|p| h.contains_key(p.as_str().unwrap()))
                    && wanted
                        .get("trace_id")
                        .is_none_or(|id| h.values().any(|v| v.contains(id.as_str().unwrap())))
            });
            if !ok {
                fail(
                    format!(
                        "the HTTP server received {:?}, want {wanted:?}",
                        got.iter().map(|(h, _)| h).collect::<Vec<_>>()
                    ),
                    &me.container.logs(),
                );
            }
        }
        if let Some(spans) = f.expect.get("spans") {
            checked += 1;
            // Batching exporters send within a second or so.
            let deadline = Instant::now() + Duration::from_secs(10);
            let result = loop {
                match spans_arrived(&otlp, spans) {
                    Ok(()) => break Ok(()),
                    Err(e) if Instant::now() > deadline => break Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            if let Err(e) = result {
                fail(e, &me.container.logs());
            }
        }
    }
    eprintln!("{checked} checks of {} Kyma Functions", fixtures.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} checks differ from Kyma:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
