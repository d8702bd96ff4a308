//! Integration tests of the registry client (src/registry) against Debian's `docker-registry`
//! (CNCF distribution 2.8) on 127.0.0.1, checked with skopeo. (Over 600 lines: the test servers
//! below and every client test share this one binary and its helpers.)
//!
//! Test servers here (a counting / fault-injecting proxy, a token server) bind 127.0.0.1 on a
//! free port, run as tasks of the test's runtime (ending with it), and every test is bounded
//! by [`bounded`].

#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fnbuild::oci::platform::Platform;
use fnbuild::oci::reference::Reference;
use fnbuild::registry::{
    sha256_digest, BlobOutcome, BlobSource, Client, PushBlob, PushManifest, PushReport, RegistryError, RegistryOptions,
    RetryPolicy, OCI_INDEX, OCI_MANIFEST,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// =============================================================================================
// Bounds, logs

/// Runs a test body with a time limit.
async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("test took longer than 240 s");
}

/// Everything the crate logs (at TRACE) in this test process, to check that no secret shows up.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| W)
            .try_init();
        Mutex::new(Vec::new())
    })
}

fn init_logs() {
    let _ = logs();
    tracing::debug!("logging to the test buffer");
}

fn logged_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn assert_no_secret(text: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(!text.contains(s), "{what} contains the secret {s:?}:\n{text}");
    }
}

// =============================================================================================
// Images made in the test

/// A gzip tar layer of `files`; returns (compressed bytes, diff_id).
fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = sha256_digest(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// An image to push: blobs + manifest.
struct TestImage {
    blobs: Vec<PushBlob>,
    manifest: PushManifest,
    digest: String,
    config_digest: String,
    layer_digests: Vec<String>,
}

impl TestImage {
    /// The size of one of the image's blobs.
    fn size_of(&self, digest: &str) -> u64 {
        self.blobs.iter().find(|b| b.digest == digest).map(|b| b.size).unwrap()
    }
}

/// Layers as (compressed bytes, diff_id), on top of an optional base (its manifest, config and
/// where its blobs live). New layers are pushed from files in `dir`.
fn image_on(
    base: Option<(&serde_json::Value, &serde_json::Value, &Reference)>,
    layers: &[(Vec<u8>, String)],
    dir: &Path,
    arch: &str,
) -> TestImage {
    let mut blobs = Vec::new();
    let mut descs: Vec<serde_json::Value> = Vec::new();
    let mut diff_ids: Vec<serde_json::Value> = Vec::new();
    let mut config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    if let Some((bm, bc, bref)) = base {
        config = bc.clone();
        for l in bm["layers"].as_array().unwrap() {
            descs.push(l.clone());
            blobs.push(PushBlob {
                digest: l["digest"].as_str().unwrap().to_string(),
                size: l["size"].as_u64().unwrap(),
                source: BlobSource::Registry(bref.clone()),
            });
        }
        diff_ids = bc["rootfs"]["diff_ids"].as_array().unwrap().clone();
    }
    for (gz, diff_id) in layers {
        let digest = sha256_digest(gz);
        let path = dir.join(digest.replace(':', "-"));
        std::fs::write(&path, gz).unwrap();
        descs.push(serde_json::json!({"mediaType": OCI_LAYER, "digest": digest, "size": gz.len()}));
        diff_ids.push(serde_json::Value::String(diff_id.clone()));
        blobs.push(PushBlob {
            digest,
            size: gz.len() as u64,
            source: BlobSource::File(path),
        });
    }
    config["rootfs"]["diff_ids"] = serde_json::Value::Array(diff_ids);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256_digest(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let layer_digests = descs
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    blobs.push(PushBlob {
        digest: config_digest.clone(),
        size: config_bytes.len() as u64,
        source: BlobSource::Bytes(config_bytes),
    });
    TestImage {
        blobs,
        digest: sha256_digest(&manifest_bytes),
        manifest: PushManifest {
            bytes: manifest_bytes,
            media_type: OCI_MANIFEST.into(),
        },
        config_digest,
        layer_digests,
    }
}

/// A one-layer image with one file holding `content`.
fn one_layer_image(content: &str, dir: &Path) -> TestImage {
    let l = layer(&[("app/hello.txt", content.as_bytes())]);
    image_on(None, &[l], dir, "amd64")
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        platform: Platform::new("linux", "amd64", None),
        retry: RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        },
        ..Default::default()
    }
}

fn client(o: RegistryOptions) -> Client {
    Client::new(o).expect("client")
}

fn r(s: &str) -> Reference {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// `skopeo copy docker://REF oci:DIR:t` (skopeo checks every digest on the way); returns the
/// copied manifest.
fn skopeo_verify(reference: &str, creds: Option<&str>) -> serde_json::Value {
    let dir = common::temp_dir("fnbuild-skopeo-");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.arg("--src-creds").arg(c);
    }
    cmd.arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:t", dir.path().display()));
    common::run_ok(&mut cmd);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    serde_json::from_slice(&std::fs::read(dir.path().join("blobs/sha256").join(d)).unwrap()).unwrap()
}

/// Status of `GET /v2/REPO/manifests/REF` straight at the registry (anonymous).
fn manifest_status(addr: &str, repo: &str, reference: &str) -> u16 {
    common::http_request(
        "GET",
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
        &[("Accept", OCI_MANIFEST)],
        b"",
        Duration::from_secs(5),
    )
    .0
}

// =============================================================================================
// A counting, fault-injecting HTTP proxy

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    status: u16,
    auth: bool,
}

#[derive(Clone, Debug)]
enum Action {
    /// Answer with this status (and `Retry-After` seconds), not forwarding.
    Status(u16, Option<u64>),
    /// Read a little of the request body, then drop the connection.
    DropMidBody,
    /// Wait, then forward.
    Delay(Duration),
    /// 307 to the same path on another base URL.
    RedirectTo(String),
}

struct Fault {
    method: &'static str,
    path_contains: String,
    times: usize,
    action: Action,
}

struct ProxyState {
    upstream: String,
    me: String,
    log: Mutex<Vec<Logged>>,
    faults: Mutex<Vec<Fault>>,
    client: reqwest::Client,
    /// Authorization to add upstream (a stand-in for a storage service's own credentials).
    upstream_auth: Option<String>,
}

struct Proxy {
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        Proxy::start_with(upstream, None).await
    }

    async fn start_with(upstream: &str, upstream_auth: Option<String>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            me,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            upstream_auth,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| proxy_handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy { state, task }
    }

    fn addr(&self) -> &str {
        &self.state.me
    }

    fn fault(&self, method: &'static str, path_contains: &str, times: usize, action: Action) {
        self.state.faults.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.to_string(),
            times,
            action,
        });
    }

    fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

fn take_fault(st: &ProxyState, method: &str, path: &str) -> Option<Action> {
    let mut faults = st.faults.lock().unwrap();
    for f in faults.iter_mut() {
        if f.times > 0 && (f.method.is_empty() || f.method == method) && path.contains(&f.path_contains) {
            f.times -= 1;
            return Some(f.action.clone());
        }
    }
    None
}

async fn proxy_handle(req: Request<Incoming>, st: Arc<ProxyState>) -> Result<Response<Full<Bytes>>, BoxErr> {
    use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, LOCATION, TRANSFER_ENCODING};
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let auth = req.headers().contains_key(AUTHORIZATION);
    let log = |status: u16| {
        st.log.lock().unwrap().push(Logged {
            method: method.to_string(),
            path: path.clone(),
            status,
            auth,
        });
    };
    match take_fault(&st, method.as_str(), &path) {
        Some(Action::Status(code, retry_after)) => {
            let _ = req.into_body().collect().await;
            log(code);
            let mut b = Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(s) = retry_after {
                b = b.header("retry-after", s.to_string());
            }
            return Ok(b.body(Full::new(Bytes::from_static(
                br#"{"errors":[{"code":"UNAVAILABLE","message":"fault injected by the test proxy"}]}"#,
            )))?);
        }
        Some(Action::DropMidBody) => {
            let mut body = req.into_body();
            let mut n = 0;
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame.ok().as_ref().and_then(|f| f.data_ref()) {
                    n += d.len();
                }
                if n > 0 {
                    break;
                }
            }
            log(0);
            return Err("connection dropped by the test proxy".into());
        }
        Some(Action::Delay(d)) => tokio::time::sleep(d).await,
        Some(Action::RedirectTo(base)) => {
            log(307);
            return Ok(Response::builder()
                .status(307)
                .header(LOCATION, format!("{base}{path}"))
                .body(Full::default())?);
        }
        None => {}
    }
    let url = format!("http://{}{}", st.upstream, path);
    let has_body = req.headers().contains_key(CONTENT_LENGTH) || req.headers().contains_key(TRANSFER_ENCODING);
    let mut rb = st.client.request(method.clone(), url);
    for (k, v) in req.headers() {
        if k != HOST && k != CONNECTION && k != TRANSFER_ENCODING {
            rb = rb.header(k, v);
        }
    }
    if let Some(a) = &st.upstream_auth {
        rb = rb.header(AUTHORIZATION, a);
    }
    if has_body {
        rb = rb.body(reqwest::Body::wrap_stream(req.into_body().into_data_stream()));
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            log(0);
            return Err(e.into());
        }
    };
    let status = resp.status();
    let mut out = Response::builder().status(status.as_u16());
    for (k, v) in resp.headers() {
        if k == TRANSFER_ENCODING || k == CONNECTION || (k == CONTENT_LENGTH && method != hyper::Method::HEAD) {
            continue;
        }
        if k == LOCATION {
            let rewritten = v.to_str().unwrap_or("").replace(&st.upstream, &st.me);
            out = out.header(k, rewritten);
            continue;
        }
        out = out.header(k, v);
    }
    let bytes = resp.bytes().await?;
    log(status.as_u16());
    Ok(out.body(Full::new(bytes))?)
}

fn count(log: &[Logged], method: &str, path_contains: &str) -> usize {
    log.iter()
        .filter(|l| l.method == method && l.path.contains(path_contains))
        .count()
}

// =============================================================================================
// A token server (docker token auth, RS256 JWTs signed with openssl)

struct TokenServer {
    addr: String,
    cert_pem: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    tokens: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Debug)]
struct TokenRequest {
    scopes: Vec<String>,
    user: Option<String>,
    ok: bool,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TOKEN_SERVICE: &str = "fnbuild-test-registry";
const TOKEN_ISSUER: &str = "fnbuild-test-issuer";

impl TokenServer {
    /// A token server accepting only `user`:`password` (Basic).
    async fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        common::run_ok(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=fnbuild-test-token",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        use base64::Engine;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let cert_pem = std::fs::read_to_string(&cert).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let expected = format!("Basic {}", b64(&format!("{user}:{password}")));
        let (reqs, toks, key2) = (requests.clone(), tokens.clone(), key.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (reqs, toks, key, expected, x5c) =
                    (reqs.clone(), toks.clone(), key2.clone(), expected.clone(), x5c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (reqs, toks, key, expected, x5c) =
                            (reqs.clone(), toks.clone(), key.clone(), expected.clone(), x5c.clone());
                        token_handle(req, reqs, toks, key, expected, x5c)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TokenServer {
            addr,
            cert_pem,
            requests,
            tokens,
            task,
            _dir: dir,
        }
    }

    fn config_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {{dir}}/token-cert.pem\n",
            self.addr
        )
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn token_handle(
    req: Request<Incoming>,
    reqs: Arc<Mutex<Vec<TokenRequest>>>,
    toks: Arc<Mutex<Vec<String>>>,
    key: std::path::PathBuf,
    expected_auth: String,
    x5c: String,
) -> Result<Response<Full<Bytes>>, BoxErr> {
    let url = reqwest::Url::parse(&format!("http://x{}", req.uri())).unwrap();
    let scopes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.to_string())
        .collect();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user = auth.as_deref().and_then(|a| a.strip_prefix("Basic ")).and_then(|b| {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        String::from_utf8(raw).ok()?.split(':').next().map(str::to_string)
    });
    let ok = auth.as_deref() == Some(expected_auth.as_str());
    reqs.lock().unwrap().push(TokenRequest {
        scopes: scopes.clone(),
        user,
        ok,
    });
    if !ok {
        return Ok(Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"details":"incorrect username or password"}"#,
            )))?);
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let (head, actions) = s.rsplit_once(':')?;
            let (typ, name) = head.split_once(':')?;
            Some(serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", toks.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header)?),
        b64url(&serde_json::to_vec(&claims)?)
    );
    let mut child = tokio::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    tokio::io::AsyncWriteExt::write_all(child.stdin.as_mut().unwrap(), signing_input.as_bytes()).await?;
    drop(child.stdin.take());
    let out = child.wait_with_output().await?;
    let jwt = format!("{signing_input}.{}", b64url(&out.stdout));
    toks.lock().unwrap().push(jwt.clone());
    let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300});
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?)
}

/// A docker config.json with `auth` for `registry`, in a fresh directory.
fn write_config(registry: &str, user: &str, password: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let cfg = serde_json::json!({"auths": {registry: {"auth": b64(&format!("{user}:{password}"))}}});
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    (dir, path)
}

// =============================================================================================
// Tests: push, pull, cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_one_layer_image_then_pull_it_back() {
    bounded(async {
        init_logs();
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let img = one_layer_image("hello from fnbuild", work.path());
        let target = r(&format!("{}/fn/hello:v1", proxy.addr()));

        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let progress: fnbuild::registry::ProgressFn = Arc::new(move |e| ev.lock().unwrap().push(format!("{e:?}")));
        let c = client(RegistryOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..opts()
        });
        let report = c
            .push(
                &[target.clone(), target.with_tag("latest")],
                img.blobs.clone(),
                img.manifest.clone(),
                Some(progress),
            )
            .await
            .unwrap();
        assert_eq!(report.digest, img.digest);
        assert!(
            report.blobs.iter().all(|(_, o)| *o == BlobOutcome::Uploaded),
            "{:?}",
            report.blobs
        );
        let total: u64 = img.blobs.iter().map(|b| b.size).sum();
        assert_eq!(report.bytes_uploaded, total);
        let log = proxy.log();
        assert_eq!(
            report.requests as usize,
            log.len(),
            "the report counts every request: {log:#?}"
        );
        // ping, 2 HEAD, 2 POST, 2 PUT blob, PUT manifest under the first tag, the second tag
        assert_eq!(report.requests, 9, "{log:#?}");
        let puts: Vec<&Logged> = log.iter().filter(|l| l.method == "PUT").collect();
        assert!(
            puts[puts.len() - 3].path.contains("digest="),
            "blobs before the manifest: {puts:#?}"
        );
        assert!(puts[puts.len() - 2].path.ends_with("/manifests/v1"));
        assert!(puts[puts.len() - 1].path.ends_with("/manifests/latest"));
        let events = events.lock().unwrap().clone();
        assert!(events.iter().any(|e| e.starts_with("ManifestPushed")), "{events:?}");
        assert_eq!(events.iter().filter(|e| e.starts_with("Tagged")).count(), 2);

        // skopeo reads it back and checks every digest.
        let copied = skopeo_verify(&format!("{}/fn/hello:v1", reg.addr()), None);
        assert_eq!(copied["config"]["digest"], img.config_digest.as_str());
        assert_eq!(copied["layers"][0]["digest"], img.layer_digests[0].as_str());

        // Pull it back: manifest, config; cached by digest.
        let pulled = c.pull_manifest(&target).await.unwrap();
        assert_eq!(pulled.digest, img.digest);
        assert_eq!(pulled.media_type, OCI_MANIFEST);
        assert_eq!(pulled.bytes, img.manifest.bytes);
        assert_eq!(pulled.index_digest, None);
        let config = c
            .fetch_blob(&target, &img.config_digest, img.size_of(&img.config_digest))
            .await
            .unwrap();
        assert_eq!(sha256_digest(&config), img.config_digest);
        assert!(c.blob_exists(&target, &img.layer_digests[0]).await.unwrap());
        assert!(!c.blob_exists(&target, &sha256_digest(b"nope")).await.unwrap());
        let before = c.total_requests();
        let again = c.pull_manifest(&target.with_digest(img.digest.clone())).await.unwrap();
        assert_eq!(again, pulled);
        c.fetch_blob(&target, &img.config_digest, img.size_of(&img.config_digest))
            .await
            .unwrap();
        assert_eq!(
            c.total_requests(),
            before,
            "manifest by digest and config come from the cache"
        );
        let hex = img.digest.trim_start_matches("sha256:");
        assert!(cache.path().join("manifests/sha256").join(hex).is_file());

        // Download a layer to a file.
        let dest = work.path().join("layer.tgz");
        let n = c
            .download_blob(
                &target,
                &img.layer_digests[0],
                img.size_of(&img.layer_digests[0]),
                &dest,
            )
            .await
            .unwrap();
        assert_eq!(sha256_digest(&std::fs::read(&dest).unwrap()), img.layer_digests[0]);
        assert_eq!(n, std::fs::metadata(&dest).unwrap().len());

        // Pushing again uploads nothing.
        proxy.clear();
        let c2 = client(opts());
        let report = c2
            .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        assert!(
            report.blobs.iter().all(|(_, o)| *o == BlobOutcome::Existed),
            "{:?}",
            report.blobs
        );
        assert_eq!(report.bytes_uploaded, 0);
        let log = proxy.log();
        assert_eq!(count(&log, "POST", "/blobs/uploads/"), 0);
        assert_eq!(count(&log, "PATCH", ""), 0);
        // ping, 2 HEAD, manifest under its tag
        assert_eq!(report.requests, 4, "{log:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_are_clear() {
    bounded(async {
        let reg = common::Registry::start();
        let c = client(opts());
        let missing = r(&format!("{}/no/such:tag", reg.addr()));
        let err = c.pull_manifest(&missing).await.unwrap_err();
        assert!(matches!(err, RegistryError::ManifestUnknown { .. }), "{err:?}");
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(
            msg.contains(&format!("{}/no/such:tag", reg.addr())) && msg.contains("not found"),
            "{msg}"
        );

        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("x", work.path());
        let target = r(&format!("{}/a/b:1", reg.addr()));
        c.push(&[target.clone()], img.blobs, img.manifest, None).await.unwrap();
        let err = c.fetch_blob(&target, &sha256_digest(b"absent"), 6).await.unwrap_err();
        assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err:?}");
        assert!(err.to_string().contains("a/b"), "{err}");
        let bad = c.fetch_blob(&target, "sha256:xyz", 6).await.unwrap_err().to_string();
        assert!(bad.contains("sha256:xyz"), "{bad}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_platform_selection_and_docker_v2_manifests() {
    bounded(async {
        let reg = common::Registry::start();
        let work = tempfile::tempdir().unwrap();
        let c = client(opts());
        let repo = r(&format!("{}/multi/app:1", reg.addr()));
        let amd = image_on(None, &[layer(&[("a", b"amd64")])], work.path(), "amd64");
        let arm = image_on(None, &[layer(&[("a", b"arm64")])], work.path(), "arm64");
        for img in [&amd, &arm] {
            c.push(&[repo.with_digest(img.digest.clone())], img.blobs.clone(), img.manifest.clone(), None).await.unwrap();
        }
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.manifest.bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.manifest.bytes.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ]
        });
        let index_bytes = serde_json::to_vec(&index).unwrap();
        let report = c
            .push(&[repo.clone()], vec![], PushManifest { bytes: index_bytes.clone(), media_type: OCI_INDEX.into() }, None)
            .await
            .unwrap();
        assert_eq!(report.digest, sha256_digest(&index_bytes));

        let got = c.pull_manifest(&repo).await.unwrap();
        assert_eq!(got.digest, amd.digest);
        assert_eq!(got.index_digest.as_deref(), Some(report.digest.as_str()));
        let got = c.pull_manifest_for(&repo, &"linux/arm64".parse().unwrap()).await.unwrap();
        assert_eq!(got.digest, arm.digest);
        let err = c.pull_manifest_for(&repo, &"linux/s390x".parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, RegistryError::PlatformNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(msg.contains("linux/s390x") && msg.contains("linux/amd64, linux/arm64/v8"), "{msg}");

        // An index that points at a manifest the registry lacks is refused before tagging.
        let bogus = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"none"), "size": 4, "platform": {"os": "linux", "architecture": "amd64"}}]});
        let err = c
            .push(&[repo.with_tag("bogus")], vec![], PushManifest { bytes: serde_json::to_vec(&bogus).unwrap(), media_type: OCI_INDEX.into() }, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("neither among the blobs"), "{err}");
        assert_eq!(manifest_status(reg.addr(), "multi/app", "bogus"), 404);

        // Docker v2 schema 2 (pushed by skopeo from a dir: copy keeps the media type).
        let pushed = reg.push(&common::base_images().node_docker_dir_ref(), "docker/node:20");
        let got = c.pull_manifest(&r(&pushed)).await.unwrap();
        assert_eq!(got.media_type, fnbuild::registry::DOCKER_MANIFEST);
        let m: serde_json::Value = serde_json::from_slice(&got.bytes).unwrap();
        let cfg = c.fetch_blob(&r(&pushed), m["config"]["digest"].as_str().unwrap(), m["config"]["size"].as_u64().unwrap()).await.unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(cfg["architecture"], "amd64");
    })
    .await;
}

// =============================================================================================
// Tests: mounts, copies, request counts

/// Pulls a base from the registry with the client: (manifest JSON, config JSON).
async fn base_of(c: &Client, base: &Reference) -> (serde_json::Value, serde_json::Value) {
    let m = c.pull_manifest(base).await.unwrap();
    let mj: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let cfg = c
        .fetch_blob(
            base,
            mj["config"]["digest"].as_str().unwrap(),
            mj["config"]["size"].as_u64().unwrap(),
        )
        .await
        .unwrap();
    (mj, serde_json::from_slice(&cfg).unwrap())
}

fn outcome(report: &PushReport, digest: &str) -> BlobOutcome {
    report.blobs.iter().find(|(d, _)| d == digest).map(|(_, o)| *o).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_layers_are_mounted_and_unchanged_pushes_upload_nothing() {
    bounded(async {
        init_logs();
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        // A base of three layers in repository base/three (pushed by skopeo from an OCI layout
        // that the client first pushes elsewhere: skopeo is the independent writer here).
        let c0 = client(opts());
        let seed = image_on(
            None,
            &[
                layer(&[("b1", &[1u8; 3000])]),
                layer(&[("b2", &[2u8; 5000])]),
                layer(&[("b3", b"three")]),
            ],
            work.path(),
            "amd64",
        );
        let seed_ref = r(&format!("{}/seed/three:1", reg.addr()));
        c0.push(&[seed_ref.clone()], seed.blobs.clone(), seed.manifest.clone(), None)
            .await
            .unwrap();
        let layout = common::temp_dir("fnbuild-layout-");
        common::run_ok(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{seed_ref}"))
                .arg(format!("oci:{}:1", layout.path().display())),
        );
        reg.push_oci_layout(layout.path(), "1", "base/three:1");
        // Plus the real node base image.
        reg.push_oci_layout(&common::base_images().node, common::NODE_TAG, "base/node:20");

        for (base_name, n_base) in [("base/three:1", 3usize), ("base/node:20", 1)] {
            let base = r(&format!("{}/{base_name}", proxy.addr()));
            let (bm, bc) = base_of(&c0, &base).await;
            let app = image_on(
                Some((&bm, &bc, &base)),
                &[layer(&[("app/handler.js", b"module.exports.main = () => 'hi';")])],
                work.path(),
                "amd64",
            );
            let target = r(&format!(
                "{}/app/{}:1",
                proxy.addr(),
                base_name.replace(['/', ':'], "-")
            ));

            // First push: base layers mounted, the rest uploaded.
            proxy.clear();
            let report = client(opts())
                .push(&[target.clone()], app.blobs.clone(), app.manifest.clone(), None)
                .await
                .unwrap();
            let log = proxy.log();
            assert_eq!(report.requests as usize, log.len());
            for l in &app.layer_digests[..n_base] {
                assert_eq!(outcome(&report, l), BlobOutcome::Mounted, "{log:#?}");
                assert_eq!(
                    count(&log, "PUT", &format!("digest={}", l.replace(':', "%3A"))),
                    0,
                    "{l} was uploaded: {log:#?}"
                );
            }
            assert_eq!(count(&log, "POST", "mount="), n_base);
            assert!(
                log.iter()
                    .filter(|l| l.path.contains("mount="))
                    .all(|l| l.path.contains("from=base") && l.status == 201),
                "{log:#?}"
            );
            let new_bytes: u64 = app
                .blobs
                .iter()
                .filter(|b| !matches!(b.source, BlobSource::Registry(_)))
                .map(|b| b.size)
                .sum();
            assert_eq!(
                report.bytes_uploaded, new_bytes,
                "only the new layer and the config are uploaded"
            );
            // ping + HEAD×(n+2) + mount×n + (POST+PUT)×2 + manifest + tag
            assert_eq!(report.requests as usize, 1 + (n_base + 2) + n_base + 4 + 1, "{log:#?}");
            eprintln!(
                "[{base_name}] first push of base+1 layer: {} requests, {} bytes uploaded",
                report.requests, report.bytes_uploaded
            );
            skopeo_verify(
                &format!("{}/app/{}:1", reg.addr(), base_name.replace(['/', ':'], "-")),
                None,
            );

            // Unchanged: nothing uploaded or mounted.
            proxy.clear();
            let report = client(opts())
                .push(&[target.clone()], app.blobs.clone(), app.manifest.clone(), None)
                .await
                .unwrap();
            assert_eq!(report.bytes_uploaded, 0);
            assert!(report.blobs.iter().all(|(_, o)| *o == BlobOutcome::Existed));
            assert_eq!(report.requests as usize, 1 + (n_base + 2) + 1);
            eprintln!(
                "[{base_name}] unchanged push: {} requests, 0 bytes uploaded",
                report.requests
            );

            // One changed layer: only it and the config go up.
            let app2 = image_on(
                Some((&bm, &bc, &base)),
                &[layer(&[("app/handler.js", b"module.exports.main = () => 'hi v2';")])],
                work.path(),
                "amd64",
            );
            proxy.clear();
            let report = client(opts())
                .push(&[target.with_tag("2")], app2.blobs.clone(), app2.manifest.clone(), None)
                .await
                .unwrap();
            let uploaded: Vec<_> = report
                .blobs
                .iter()
                .filter(|(_, o)| *o == BlobOutcome::Uploaded)
                .collect();
            assert_eq!(uploaded.len(), 2, "{:?}", report.blobs);
            assert_eq!(count(&proxy.log(), "POST", "mount="), 0);
            assert_eq!(report.requests as usize, 1 + (n_base + 2) + 4 + 1);
            eprintln!(
                "[{base_name}] one-layer change: {} requests, {} bytes uploaded",
                report.requests, report.bytes_uploaded
            );
            skopeo_verify(
                &format!("{}/app/{}:2", reg.addr(), base_name.replace(['/', ':'], "-")),
                None,
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_mount_falls_back_to_copy() {
    bounded(async {
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let c = client(opts());
        let base = r(&format!("{}/base/one:1", proxy.addr()));
        let b = image_on(None, &[layer(&[("f", b"base layer")])], work.path(), "amd64");
        c.push(&[base.clone()], b.blobs.clone(), b.manifest.clone(), None)
            .await
            .unwrap();
        let (bm, bc) = base_of(&c, &base).await;
        let app = image_on(
            Some((&bm, &bc, &base)),
            &[layer(&[("g", b"app")])],
            work.path(),
            "amd64",
        );
        // The registry answers the mount with 202 (starting an upload) once, and fails it once.
        proxy.fault("POST", "mount=", 1, Action::Status(500, None));
        proxy.clear();
        let report = client(RegistryOptions {
            retry: RetryPolicy {
                max_attempts: 1,
                ..opts().retry
            },
            ..opts()
        })
        .push(
            &[r(&format!("{}/app/x:1", proxy.addr()))],
            app.blobs.clone(),
            app.manifest.clone(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            outcome(&report, &app.layer_digests[0]),
            BlobOutcome::Copied,
            "{:?}",
            proxy.log()
        );
        skopeo_verify(&format!("{}/app/x:1", reg.addr()), None);

        // A mount that starts an upload (202: source repository unknown here) is used for the copy.
        let ghost = r(&format!("{}/ghost/repo:1", proxy.addr()));
        let app2 = image_on(
            Some((&bm, &bc, &ghost)),
            &[layer(&[("g", b"app2")])],
            work.path(),
            "amd64",
        );
        // The source must serve the blob for the copy: point at the real base for the GET.
        proxy.fault(
            "GET",
            "/v2/ghost/repo/blobs/",
            5,
            Action::RedirectTo(format!(
                "http://{}/v2/base/one/blobs/{}#",
                proxy.addr(),
                app.layer_digests[0]
            )),
        );
        proxy.clear();
        let report = client(opts())
            .push(
                &[r(&format!("{}/app/y:1", proxy.addr()))],
                app2.blobs.clone(),
                app2.manifest.clone(),
                None,
            )
            .await
            .unwrap();
        let log = proxy.log();
        assert!(
            log.iter().any(|l| l.path.contains("mount=") && l.status == 202),
            "{log:#?}"
        );
        assert_eq!(outcome(&report, &app.layer_digests[0]), BlobOutcome::Copied);
        skopeo_verify(&format!("{}/app/y:1", reg.addr()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_from_another_registry_are_streamed_across() {
    bounded(async {
        let reg_a = common::Registry::start();
        let reg_b = common::Registry::start();
        let base_ref = reg_a.push_oci_layout(&common::base_images().node, common::NODE_TAG, "base/node:20");
        let work = tempfile::tempdir().unwrap();
        let c = client(opts());
        let base = r(&base_ref);
        let (bm, bc) = base_of(&c, &base).await;
        let app = image_on(
            Some((&bm, &bc, &base)),
            &[layer(&[("app/x", b"x")])],
            work.path(),
            "amd64",
        );
        let target = r(&format!("{}/app/node:1", reg_b.addr()));
        let report = c
            .push(&[target], app.blobs.clone(), app.manifest.clone(), None)
            .await
            .unwrap();
        assert_eq!(outcome(&report, &app.layer_digests[0]), BlobOutcome::Copied);
        let base_size = bm["layers"][0]["size"].as_u64().unwrap();
        assert!(
            report.bytes_uploaded >= base_size,
            "{} < {base_size}",
            report.bytes_uploaded
        );
        let copied = skopeo_verify(&format!("{}/app/node:1", reg_b.addr()), None);
        assert_eq!(copied["layers"][0]["digest"], app.layer_digests[0].as_str());
    })
    .await;
}

// =============================================================================================
// Tests: authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_config_json_and_wrong_password() {
    bounded(async {
        init_logs();
        let reg = common::Registry::start_htpasswd();
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("basic auth", work.path());
        let target = r(&format!("{}/secure/app:1", reg.addr()));

        // No credentials at all.
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("config.json"), "{}").unwrap();
        let err = client(RegistryOptions {
            registry_config: Some(empty.path().join("config.json")),
            ..opts()
        })
        .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
        .await
        .unwrap_err();
        assert!(matches!(err, RegistryError::AuthRequired { .. }), "{err:?}");
        assert!(
            err.to_string().contains(reg.addr()) && err.to_string().contains("docker login"),
            "{err}"
        );

        // A wrong (distinctive) password: a clear error, naming the registry, never the password.
        let wrong = "Wr0ng-Distinct1ve-Pa55word-kq7Yw";
        let (_d, cfg) = write_config(reg.addr(), common::REGISTRY_USER, wrong);
        let err = client(RegistryOptions {
            registry_config: Some(cfg.clone()),
            ..opts()
        })
        .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
        .await
        .unwrap_err();
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err:?}");
        assert!(
            msg.contains(reg.addr()) && msg.contains("secure/app") && msg.contains("config.json"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert_no_secret(
            &msg,
            &[wrong, &b64(&format!("{}:{wrong}", common::REGISTRY_USER))],
            "the error",
        );
        assert_no_secret(&format!("{err:?}"), &[wrong], "the error's Debug");
        // Nothing was pushed.
        assert_ne!(
            common::http_request(
                "HEAD",
                &format!("http://{}/v2/secure/app/blobs/{}", reg.addr(), img.config_digest),
                &[("Authorization", &format!("Basic {}", b64("fnuser:fnpass")))],
                b"",
                Duration::from_secs(5)
            )
            .0,
            200
        );

        // The right password.
        let (_d2, cfg) = write_config(reg.addr(), common::REGISTRY_USER, common::REGISTRY_PASSWORD);
        let c = client(RegistryOptions {
            registry_config: Some(cfg),
            ..opts()
        });
        let report = c
            .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        assert_eq!(report.digest, img.digest);
        skopeo_verify(
            &format!("{}/secure/app:1", reg.addr()),
            Some(&format!("{}:{}", common::REGISTRY_USER, common::REGISTRY_PASSWORD)),
        );
        assert_eq!(c.pull_manifest(&target).await.unwrap().digest, img.digest);

        let logs = logged_text();
        assert!(logs.contains("registry request"), "the test captured the client's logs");
        assert_no_secret(
            &logs,
            &[
                wrong,
                &b64(&format!("{}:{}", common::REGISTRY_USER, common::REGISTRY_PASSWORD)),
            ],
            "the logs",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_one_token_for_push_and_mount() {
    bounded(async {
        init_logs();
        let password = "Tok3n-Distinct1ve-Pa55-zq8Xv";
        let tokens = TokenServer::start("tokuser", password).await;
        let mut reg =
            common::Registry::start_with_files(&tokens.config_yaml(), &[("token-cert.pem", &tokens.cert_pem)]);
        reg.credentials = Some(("tokuser".into(), password.into()));
        let base_ref = reg.push_oci_layout(&common::base_images().node, common::NODE_TAG, "base/node:20");
        let (_d, cfg) = write_config(reg.addr(), "tokuser", password);
        let o = RegistryOptions {
            registry_config: Some(cfg),
            ..opts()
        };

        let c = client(o.clone());
        let base = r(&base_ref);
        let (bm, bc) = base_of(&c, &base).await;
        let work = tempfile::tempdir().unwrap();
        let app = image_on(
            Some((&bm, &bc, &base)),
            &[layer(&[("app/f", b"token")])],
            work.path(),
            "amd64",
        );
        let target = r(&format!("{}/team/app:1", reg.addr()));
        tokens.requests.lock().unwrap().clear();
        let report = client(o.clone())
            .push(&[target.clone()], app.blobs.clone(), app.manifest.clone(), None)
            .await
            .unwrap();
        assert_eq!(outcome(&report, &app.layer_digests[0]), BlobOutcome::Mounted);
        let reqs = tokens.requests();
        assert_eq!(reqs.len(), 1, "one token for the whole push: {reqs:?}");
        assert_eq!(
            reqs[0].scopes,
            vec!["repository:team/app:pull,push", "repository:base/node:pull"]
        );
        assert_eq!(reqs[0].user.as_deref(), Some("tokuser"));
        assert!(reqs[0].ok);
        skopeo_verify(
            &format!("{}/team/app:1", reg.addr()),
            Some(&format!("tokuser:{password}")),
        );

        // A wrong password fails at the token service, naming the registry, not the password.
        let wrong = "Wr0ng-T0ken-Pa55-vv3";
        let (_d3, bad_cfg) = write_config(reg.addr(), "tokuser", wrong);
        let err = client(RegistryOptions {
            registry_config: Some(bad_cfg),
            ..opts()
        })
        .push(&[target.with_tag("2")], app.blobs.clone(), app.manifest.clone(), None)
        .await
        .unwrap_err();
        assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err:?}");
        assert!(err.to_string().contains(reg.addr()), "{err}");
        assert_eq!(manifest_status(reg.addr(), "team/app", "2"), 401);

        let logs = logged_text();
        let issued = tokens.tokens.lock().unwrap().clone();
        let mut secrets: Vec<&str> = vec![password, wrong];
        secrets.extend(issued.iter().map(String::as_str));
        assert_no_secret(&logs, &secrets, "the logs");
        assert_no_secret(&err.to_string(), &secrets, "the error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_not_sent_to_redirect_targets() {
    bounded(async {
        let reg = common::Registry::start_htpasswd();
        let basic = format!(
            "Basic {}",
            b64(&format!("{}:{}", common::REGISTRY_USER, common::REGISTRY_PASSWORD))
        );
        // "storage": another origin that serves blobs with its own credentials.
        let storage = Proxy::start_with(reg.addr(), Some(basic.clone())).await;
        let front = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("redirected", work.path());
        let (_d, cfg) = write_config(front.addr(), common::REGISTRY_USER, common::REGISTRY_PASSWORD);
        let c = client(RegistryOptions {
            registry_config: Some(cfg),
            ..opts()
        });
        let target = r(&format!("{}/redir/app:1", front.addr()));
        c.push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();

        front.fault(
            "GET",
            "/blobs/sha256:",
            10,
            Action::RedirectTo(format!("http://{}", storage.addr())),
        );
        let bytes = c
            .fetch_blob(&target, &img.config_digest, img.size_of(&img.config_digest))
            .await
            .unwrap();
        assert_eq!(sha256_digest(&bytes), img.config_digest);
        let front_log = front.log();
        let storage_log = storage.log();
        assert!(front_log.iter().any(|l| l.status == 307 && l.auth), "{front_log:#?}");
        assert_eq!(storage_log.len(), 1, "{storage_log:#?}");
        assert!(
            !storage_log[0].auth,
            "Authorization went to another host: {storage_log:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_and_tls_errors() {
    bounded(async {
        // A TLS registry whose certificate (for localhost) comes from a private CA.
        let dir = common::temp_dir("fnbuild-tls-");
        let p = |n: &str| dir.path().join(n);
        let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
        common::run_ok(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fnbuild-test-ca"]).arg("-keyout").arg(p("ca.key")).arg("-out").arg(&ca));
        common::run_ok(Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]).arg("-keyout").arg(&key).arg("-out").arg(p("leaf.csr")));
        std::fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
        common::run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
                .arg(p("leaf.csr")).arg("-CA").arg(&ca).arg("-CAkey").arg(p("ca.key")).arg("-extfile").arg(p("ext.cnf")).arg("-out").arg(&cert),
        );
        // First a plain registry at that port, recorded as open by a push, then replaced.
        let cache = tempfile::tempdir().unwrap();
        let plain = common::Registry::start();
        let port: u16 = plain.addr().rsplit(':').next().unwrap().parse().unwrap();
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("tls", work.path());
        let target = r(&format!("localhost:{port}/tls/app:1"));
        let cached = |o: RegistryOptions| RegistryOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..o
        };
        client(cached(opts()))
            .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        drop(plain);
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: s\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("storage").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _reg = Kill(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let err = client(opts()).push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None).await.unwrap_err();
        assert!(matches!(err, RegistryError::Tls { .. }), "{err:?}");
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(msg.contains(&format!("localhost:{port}")) && msg.contains("--ca-cert"), "{msg}");

        // The stale record (plain HTTP) is noticed and the push goes over TLS.
        let c = client(cached(RegistryOptions { ca_certs: vec![ca.clone()], ..opts() }));
        let report = c.push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None).await.unwrap();
        assert_eq!(c.pull_manifest(&target).await.unwrap().digest, report.digest);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registries_are_not_probed_again_and_changes_are_noticed() {
    bounded(async {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let image = |name: &str| {
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            one_layer_image(name, &dir)
        };
        let cached = |o: RegistryOptions| {
            client(RegistryOptions {
                cache_dir: Some(cache.path().to_path_buf()),
                ..o
            })
        };
        let probes = |p: &Proxy| p.log().iter().filter(|l| l.method == "GET" && l.path == "/v2/").count();

        // An open registry: probed by the first push only (each client here is a new process).
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        for (i, name) in ["first", "second"].iter().enumerate() {
            let img = image(name);
            let target = r(&format!("{}/open/{name}:1", proxy.addr()));
            let report = cached(opts())
                .push(&[target], img.blobs, img.manifest, None)
                .await
                .unwrap();
            assert_eq!(report.digest, img.digest);
            assert_eq!(probes(&proxy), usize::from(i == 0), "{:#?}", proxy.log());
            proxy.clear();
        }

        // Replaced, at the same address, by a registry asking for credentials: the push still
        // succeeds with them.
        let port: u16 = reg.addr().rsplit(':').next().unwrap().parse().unwrap();
        let img = image("third");
        cached(opts())
            .push(
                &[r(&format!("{}/open/third:1", reg.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap();
        drop(reg);
        let reg = common::Registry::start_htpasswd_on(Some(port));
        let (_d, cfg) = write_config(reg.addr(), common::REGISTRY_USER, common::REGISTRY_PASSWORD);
        let target = r(&format!("{}/secure/third:1", reg.addr()));
        let report = cached(RegistryOptions {
            registry_config: Some(cfg),
            ..opts()
        })
        .push(&[target], img.blobs.clone(), img.manifest.clone(), None)
        .await
        .unwrap();
        assert_eq!(report.digest, img.digest);
        skopeo_verify(
            &format!("{}/secure/third:1", reg.addr()),
            Some(&format!("{}:{}", common::REGISTRY_USER, common::REGISTRY_PASSWORD)),
        );

        // Gone: the usual clear error, naming it.
        let reg = common::Registry::start();
        let img = image("fourth");
        let target = r(&format!("{}/open/fourth:1", reg.addr()));
        cached(opts())
            .push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        let addr = reg.addr().to_string();
        drop(reg);
        let quick = RegistryOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                ..opts().retry
            },
            ..opts()
        };
        let err = cached(quick)
            .push(&[target], img.blobs, img.manifest, None)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_named() {
    bounded(async {
        let port = common::free_port();
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("x", work.path());
        let o = RegistryOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(50),
                ..opts().retry
            },
            ..opts()
        };
        let started = Instant::now();
        let err = client(o)
            .push(&[r(&format!("127.0.0.1:{port}/a/b:1"))], img.blobs, img.manifest, None)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(
            msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("cannot reach"),
            "{msg}"
        );
    })
    .await;
}

// =============================================================================================
// Tests: faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried() {
    bounded(async {
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("retry me", work.path());
        proxy.fault("HEAD", "/blobs/", 2, Action::Status(503, None));
        proxy.fault("POST", "/blobs/uploads/", 1, Action::Status(500, None));
        proxy.fault("PUT", "digest=", 1, Action::Status(502, None));
        proxy.fault("PUT", "/manifests/v1", 1, Action::Status(429, Some(1)));
        let started = Instant::now();
        let report = client(opts())
            .push(
                &[r(&format!("{}/faults/app:v1", proxy.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was honoured");
        let log = proxy.log();
        assert_eq!(log.iter().filter(|l| l.status >= 429).count(), 5, "{log:#?}");
        assert_eq!(report.requests as usize, log.len());
        skopeo_verify(&format!("{}/faults/app:v1", reg.addr()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_upload_is_retried_from_a_fresh_post() {
    bounded(async {
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        // A layer big enough to be sent in several chunks.
        let big: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let img = image_on(None, &[layer(&[("big.bin", &big)])], work.path(), "amd64");
        let layer_digest = img.layer_digests[0].clone();
        proxy.fault(
            "PUT",
            &format!("digest={}", layer_digest.replace(':', "%3A")),
            1,
            Action::DropMidBody,
        );
        let report = client(opts())
            .push(
                &[r(&format!("{}/drop/app:1", proxy.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap();
        let log = proxy.log();
        assert_eq!(
            count(&log, "PUT", "digest=sha256%3A"),
            3,
            "dropped PUT, retried PUT, config PUT: {log:#?}"
        );
        assert_eq!(
            count(&log, "POST", "/blobs/uploads/"),
            3,
            "a fresh POST for the retry: {log:#?}"
        );
        let total: u64 = img.blobs.iter().map(|b| b.size).sum();
        assert!(report.bytes_uploaded > total, "the dropped attempt's bytes count too");
        skopeo_verify(&format!("{}/drop/app:1", reg.addr()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_time_out_and_are_retried() {
    bounded(async {
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("slow", work.path());
        // Every request slowed a little, and two HEADs hang past the request timeout.
        proxy.fault("HEAD", "/blobs/", 2, Action::Delay(Duration::from_secs(3)));
        proxy.fault("", "/v2/", 1000, Action::Delay(Duration::from_millis(100)));
        let o = RegistryOptions {
            request_timeout: Duration::from_secs(1),
            ..opts()
        };
        let started = Instant::now();
        client(o)
            .push(
                &[r(&format!("{}/slow/app:1", proxy.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        skopeo_verify(&format!("{}/slow/app:1", reg.addr()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_fail_clearly_and_leave_no_manifest() {
    bounded(async {
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("never", work.path());
        let o = RegistryOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                max_elapsed: Duration::from_secs(5),
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            ..opts()
        };
        // The layer's upload always fails.
        let layer_put = format!("digest={}", img.layer_digests[0].replace(':', "%3A"));
        proxy.fault("PUT", &layer_put, 1000, Action::Status(503, None));
        let started = Instant::now();
        let err = client(o.clone())
            .push(
                &[r(&format!("{}/broken/app:1", proxy.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, RegistryError::RetriesExhausted { .. }), "{err:?}");
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(
            msg.contains(proxy.addr())
                && msg.contains(&img.layer_digests[0])
                && msg.contains("3 attempts")
                && msg.contains("503"),
            "{msg}"
        );
        let log = proxy.log();
        assert_eq!(
            count(&log, "PUT", "/manifests/"),
            0,
            "no manifest may be pushed: {log:#?}"
        );
        assert_eq!(manifest_status(reg.addr(), "broken/app", "1"), 404);

        // 429 with a Retry-After beyond the budget: give up at once, saying so.
        proxy.fault("HEAD", "/blobs/", 1000, Action::Status(429, Some(30)));
        let started = Instant::now();
        let err = client(o.clone())
            .push(
                &[r(&format!("{}/broken/app:2", proxy.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("Retry-After 30s"), "{err}");

        // The manifest PUT keeps failing: the tag never appears.
        let reg2 = common::Registry::start();
        let proxy2 = Proxy::start(reg2.addr()).await;
        proxy2.fault("PUT", "/manifests/", 1000, Action::Status(500, None));
        let err = client(o)
            .push(
                &[r(&format!("{}/broken/app:3", proxy2.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("manifest"), "{err}");
        assert_eq!(manifest_status(reg2.addr(), "broken/app", "3"), 404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refusals_carry_its_error_code() {
    bounded(async {
        let reg = common::Registry::start();
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("refuse", work.path());
        let c = client(opts());
        let target = r(&format!("{}/refuse/app:1", reg.addr()));
        // A manifest whose layer is not pushed and not present is caught before the registry.
        let err = c
            .push(
                &[target.clone()],
                vec![img.blobs[1].clone()],
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("neither among the blobs"), "{err}");
        // A blob whose bytes do not match its digest: the registry refuses it with its code.
        let mut wrong = img.blobs[1].clone();
        wrong.source = BlobSource::Bytes(vec![b'x'; wrong.size as usize]);
        let fresh = r(&format!("{}/refuse/fresh:1", reg.addr()));
        let err = c
            .push(&[fresh], vec![img.blobs[0].clone(), wrong], img.manifest.clone(), None)
            .await
            .unwrap_err();
        let msg = err.to_string();
        eprintln!("error message: {msg}");
        assert!(matches!(err, RegistryError::Refused { .. }), "{err:?}");
        assert!(
            msg.contains("DIGEST_INVALID") && msg.contains("refuse/fresh") && msg.contains(reg.addr()),
            "{msg}"
        );
        assert_eq!(manifest_status(reg.addr(), "refuse/app", "1"), 404);
        assert_eq!(manifest_status(reg.addr(), "refuse/fresh", "1"), 404);
        // Targets in two repositories are refused up front.
        let err = c
            .push(
                &[target.clone(), r(&format!("{}/other/app:1", reg.addr()))],
                img.blobs.clone(),
                img.manifest.clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidPush(_)), "{err:?}");
    })
    .await;
}

// =============================================================================================
// Referrers (OCI 1.1 artifacts that refer to an image: SBOMs)

use fnbuild::oci::referrers::{fallback_tag, Artifact, Subject};

fn subject_of(img: &TestImage) -> Subject {
    Subject {
        media_type: OCI_MANIFEST.into(),
        digest: img.digest.parse().unwrap(),
        size: img.manifest.bytes.len() as u64,
    }
}

/// distribution 2.8 has no referrers API: the artifacts go in by digest, then the subject's
/// fallback index (`sha256-<hex>`), read, extended and written back, so a second attach keeps
/// what the first one listed; nothing refers to the image before it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_go_in_after_their_image_through_the_fallback_tag() {
    bounded(async {
        init_logs();
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("an image with an SBOM", work.path());
        let target = r(&format!("{}/fn/attached:v1", proxy.addr()));
        let c = client(opts());
        c.push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        let subject = subject_of(&img);
        let sbom = Artifact::new(
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec(),
            &subject,
            1,
        );
        proxy.clear();
        let report = c.attach(&target, std::slice::from_ref(&sbom)).await.unwrap();
        assert!(!report.referrers_api);
        let log = proxy.log();
        let puts: Vec<&str> = log
            .iter()
            .filter(|l| l.method == "PUT" && l.path.contains("/manifests/"))
            .map(|l| l.path.as_str())
            .collect();
        let tag = fallback_tag(&subject.digest);
        assert_eq!(
            puts,
            [
                format!("/v2/fn/attached/manifests/{}", sbom.digest),
                format!("/v2/fn/attached/manifests/{tag}")
            ],
            "the artifact, then the index that lists it: {log:?}"
        );
        let index = common::skopeo_inspect_raw(&format!("docker://{}/fn/attached:{tag}", reg.addr()));
        assert_eq!(index["manifests"][0]["digest"], sbom.digest.as_str(), "{index}");
        assert_eq!(index["manifests"][0]["artifactType"], "application/spdx+json");
        let manifest = common::skopeo_inspect_raw(&format!("docker://{}/fn/attached@{}", reg.addr(), sbom.digest));
        assert_eq!(manifest["subject"]["digest"], img.digest.as_str());

        // Another tool's artifact (a signature) for the same image, then ours again: both stay.
        let other = Artifact::new(
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            b"{}".to_vec(),
            &subject,
            1,
        );
        c.attach(&target, std::slice::from_ref(&other)).await.unwrap();
        c.attach(&target, std::slice::from_ref(&sbom)).await.unwrap();
        let listed = c.referrers(&target, &subject.digest).await.unwrap();
        assert_eq!(
            listed,
            [
                (sbom.digest.clone(), "application/spdx+json".to_string()),
                (
                    other.digest.clone(),
                    "application/vnd.dev.sigstore.bundle.v0.3+json".to_string()
                )
            ]
        );

        // Something under the fallback tag that is not an index is left alone, with a clear error.
        let junk = one_layer_image("not an index", work.path());
        c.push(
            &[target.with_tag(tag.clone())],
            junk.blobs.clone(),
            junk.manifest.clone(),
            None,
        )
        .await
        .unwrap();
        let err = c
            .attach(&target, std::slice::from_ref(&sbom))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("the referrers tag {tag}")) && err.contains("left as it is"),
            "{err}"
        );
    })
    .await;
}

/// A registry whose referrers API answers (a stand-in: the proxy answers 200 for it, as no
/// registry with the API can be installed here) gets the artifacts and no fallback tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_referrers_api_no_fallback_tag_is_written() {
    bounded(async {
        init_logs();
        let reg = common::Registry::start();
        let proxy = Proxy::start(reg.addr()).await;
        let work = tempfile::tempdir().unwrap();
        let img = one_layer_image("an image on a registry with the referrers API", work.path());
        let target = r(&format!("{}/fn/api:v1", proxy.addr()));
        let c = client(opts());
        c.push(&[target.clone()], img.blobs.clone(), img.manifest.clone(), None)
            .await
            .unwrap();
        proxy.fault("GET", "/referrers/", 1, Action::Status(200, None));
        let subject = subject_of(&img);
        let spdx = Artifact::new("application/spdx+json", b"{\"a\":1}".to_vec(), &subject, 1);
        let cdx = Artifact::new("application/vnd.cyclonedx+json", b"{\"b\":2}".to_vec(), &subject, 1);
        proxy.clear();
        let report = c.attach(&target, &[spdx.clone(), cdx.clone()]).await.unwrap();
        assert!(report.referrers_api);
        let log = proxy.log();
        assert!(
            !log.iter()
                .any(|l| l.method == "PUT" && l.path.contains(&fallback_tag(&subject.digest))),
            "no fallback tag: {log:?}"
        );
        // The image's tag still names the image, not an artifact.
        let tagged = common::skopeo_inspect_raw(&format!("docker://{}/fn/api:v1", reg.addr()));
        assert!(tagged.get("subject").is_none(), "{tagged}");
        for a in [&spdx, &cdx] {
            let m = common::skopeo_inspect_raw(&format!("docker://{}/fn/api@{}", reg.addr(), a.digest));
            assert_eq!(m["subject"]["digest"], img.digest.as_str());
        }
    })
    .await;
}
