//! No panic on any input: every parser of untrusted input gets arbitrary data (random bytes,
//! and JSON, TOML and line grammars built from the words those parsers look for, so that the
//! cases reach past the first check) and must answer Ok or Err. The number of cases is bounded
//! (PROPTEST_CASES raises it for a longer hunt): image layouts (index.json, manifests, configs),
//! package.json and requirements.txt, runtime.toml, registry error bodies and WWW-Authenticate
//! headers, an output layout's index.json.

use crate::function::runtime::Runtimes;
use crate::function::source::FunctionSource;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// JSON built from the keys and values image and package files use.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "schemaVersion",
        "mediaType",
        "manifests",
        "layers",
        "config",
        "digest",
        "size",
        "platform",
        "architecture",
        "os",
        "variant",
        "annotations",
        "rootfs",
        "diff_ids",
        "type",
        "history",
        "Env",
        "Entrypoint",
        "Cmd",
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "overrides",
        "workspaces",
        "bundleDependencies",
        "scripts",
        "name",
        "version",
        "packages",
        "lockfileVersion",
        "resolved",
        "link",
        "org.opencontainers.image.ref.name",
    ]);
    let text = prop::sample::select(vec![
        "",
        "x",
        "latest",
        "amd64",
        "linux",
        "sha256:",
        "sha256:../../etc/passwd",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "file:../x",
        "git+file:/x",
        "^1.0.0",
        "npm:left-pad@1",
        "link:..",
        "workspace:*",
        "\u{0}",
        "é",
    ])
    .prop_map(String::from);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone().prop_map(String::from), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sha256(bytes: &[u8]) -> String {
    crate::oci::digest::sha256_digest(bytes)
}

/// A layout whose index points at `manifest`, which points at `config` (each of any shape).
fn write_layout(dir: &Path, index_extra: &Value, manifest: &Value, config: &Value, raw_index: Option<&[u8]>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let config_bytes = serde_json::to_vec(config).unwrap();
    let mut manifest = manifest.clone();
    if let Some(m) = manifest.as_object_mut() {
        m.entry("config")
            .or_insert(json!({"digest": sha256(&config_bytes), "size": config_bytes.len()}));
    }
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    for bytes in [&config_bytes, &manifest_bytes] {
        let d = sha256(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
    }
    let mut index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(&manifest_bytes), "size": manifest_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    if let (Some(i), Some(extra)) = (index.as_object_mut(), index_extra.as_object()) {
        for (k, v) in extra {
            i.insert(k.clone(), v.clone());
        }
    }
    let index_bytes = match raw_index {
        Some(raw) => raw.to_vec(),
        None => serde_json::to_vec(&index).unwrap(),
    };
    std::fs::write(dir.join("index.json"), index_bytes).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// requirements.txt lines from pip's grammar, well and badly formed.
fn requirements() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "requests==2.31.0",
        "flask>=2",
        "numpy ; python_version < '3.13'",
        "-r other.txt",
        "-c c.txt",
        "--index-url https://x/simple",
        "-e .",
        "./local",
        "file:../x",
        "file:///etc/passwd",
        "git+https://x/y.git#egg=y",
        "--hash=sha256:00",
        "pkg @ https://x/p.whl",
        "\\",
        "# comment",
        "${HOME}",
        "-r",
        "--extra-index-url",
        "x[extra]==1",
        "%2e%2e/x",
        "",
        "--no-binary :all:",
    ]);
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

/// runtime.toml text from the real file's keys with values of any kind.
fn runtime_toml() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "description",
        "base_image",
        "server",
        "template",
        "server_dir",
        "function_dir",
        "dependency_dir",
        "handler_file",
        "dependency_file",
        "source_key",
        "dependencies_key",
        "user",
        "working_dir",
        "entrypoint",
        "cmd",
        "port",
        "installer",
        "python_version",
        "manylinux_glibc",
        "deprecated",
        "libraries_dir",
        "unknown",
    ]);
    let value = prop::sample::select(vec![
        "\"node\"",
        "\"/usr/src/app\"",
        "\"../x\"",
        "\"/a/../b\"",
        "1",
        "-1",
        "99999999999",
        "[]",
        "[\"node\"]",
        "\"pip\"",
        "\"3.12\"",
        "\"x.y\"",
        "\"\"",
        "\"a\\nb\"",
        "{}",
        "true",
    ]);
    prop::collection::vec((key, value), 0..24)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>())
}

/// 128 cases per property in the suite; PROPTEST_CASES sets another number.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn image_layouts_of_any_shape_give_an_answer(
        index in json_value(),
        manifest in json_value(),
        config in json_value(),
        raw in prop::option::weighted(0.2, prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("base");
        write_layout(&layout, &index, &manifest, &config, raw.as_deref());
        let location = crate::formats::Location::base(&format!("oci:{}:t", layout.display())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(crate::formats::read(&location, &crate::oci::platform::Platform::host(), dir.path(), None));
        // An output into that layout reads the same index.json.
        let output = crate::formats::Location::OciLayout { dir: layout, tag: Some("x".into()) };
        let _ = crate::formats::check(&output);
    }

    #[test]
    fn dependency_files_of_any_shape_give_an_answer(
        package in json_value(),
        lock in json_value(),
        raw in prop::collection::vec(any::<u8>(), 0..64),
        reqs in requirements(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let node = Runtimes::Embedded.load("nodejs24").unwrap();
        let python = Runtimes::Embedded.load("python312").unwrap();
        for (file, bytes, runtime) in [
            ("package.json", serde_json::to_vec(&package).unwrap(), &node),
            ("package.json", raw.clone(), &node),
            ("requirements.txt", reqs.into_bytes(), &python),
            ("requirements.txt", raw, &python),
        ] {
            let src = dir.path().join(format!("src-{}", rand_name(file)));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join(&runtime.spec.handler_file), "x").unwrap();
            std::fs::write(src.join(file), &bytes).unwrap();
            std::fs::write(src.join("package-lock.json"), serde_json::to_vec(&lock).unwrap()).unwrap();
            if let Ok(source) = FunctionSource::load(&src, runtime) {
                let _ = crate::function::dependencies::plan(&source, runtime);
            }
        }
    }

    #[test]
    fn runtime_tomls_of_any_shape_give_an_answer(text in runtime_toml(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("a", text.into_bytes()), ("b", raw)] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("runtime.toml"), bytes).unwrap();
            let _ = Runtimes::Disk(dir.path().into()).load(name);
        }
    }

    #[test]
    fn registry_answers_of_any_shape_give_an_answer(
        status in any::<u16>(),
        body in json_value(),
        raw in prop::collection::vec(any::<u8>(), 0..128),
        parts in prop::collection::vec(prop::sample::select(vec![
            "Bearer ", "Basic ", "realm=", "\"https://auth/token\"", "service=", "scope=", ",", "\"", "=",
            " ", "\"repository:x:pull\"", "error=\"insufficient_scope\"", "\u{7f}", "é",
        ]), 0..16),
    ) {
        let body = serde_json::to_vec(&json!({"errors": [body]})).unwrap();
        for b in [&body, &raw] {
            let _ = crate::registry::error::describe_error_body(status, b);
            let _ = crate::registry::error::error_codes(b);
        }
        let _ = crate::registry::auth::parse_www_authenticate(&parts.concat());
    }
}

/// A directory name per case file (the same file name twice gets two).
fn rand_name(file: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{file}-{}", N.fetch_add(1, Ordering::Relaxed))
}
