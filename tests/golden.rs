//! Golden digests: the example functions, built onto a base made here byte for byte the same
//! every time, give exactly the image digests recorded in tests/fixtures/golden-digests.json.
//! A refactor of the image model, the formats or the pipeline must not change a single byte of
//! an image: this test says so. A change that is meant to change images (a runtime's server or
//! libraries, the layer format) updates the file: `FNBUILD_UPDATE_GOLDEN=1 cargo test --test
//! golden`, and says why in its commit. `FNBUILD_GOLDEN_BINARY=PATH` checks another build of
//! fnbuild (e.g. the last release) against the same file.

mod common;

use common::*;
use fnbuild::oci::digest::sha256_digest as sha256;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const GOLDEN: &str = "tests/fixtures/golden-digests.json";
const EPOCH: &str = "1700000000";

/// An OCI layout with one small layer (an os-release and a /tmp), every byte fixed: tar headers
/// with mtime 0 and root ownership, gzip without a timestamp, canonical JSON.
fn fixed_base(dir: &Path) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, body: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_mode(mode);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append(&h, body).unwrap();
    };
    entry("etc/", tar::EntryType::Directory, 0o755, b"");
    entry("etc/os-release", tar::EntryType::Regular, 0o644, b"ID=golden\n");
    entry("tmp/", tar::EntryType::Directory, 0o1777, b"");
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();

    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        digest
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "base"}
    }]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The manifest digest of the image a build wrote into `layout` under `tag`.
fn manifest_digest(layout: &Path, tag: &str) -> String {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_example_functions_give_the_recorded_image_digests() {
    let work = temp_dir("golden-");
    let base = work.path().join("base");
    fixed_base(&base);
    let binary = std::env::var("FNBUILD_GOLDEN_BINARY")
        .map(Into::into)
        .unwrap_or_else(|_| fnbuild_bin());
    let mut got = serde_json::Map::new();
    for (example, runtime) in [("hello-node", "nodejs24"), ("hello-python", "python312")] {
        // A copy with fresh file times: mtimes and the checkout's path are no input.
        let src = work.path().join(example);
        std::fs::create_dir(&src).unwrap();
        for f in std::fs::read_dir(repo_root().join("examples").join(example))
            .unwrap()
            .flatten()
        {
            std::fs::copy(f.path(), src.join(f.file_name())).unwrap();
        }
        let out = work.path().join(format!("out-{example}"));
        run_ok(
            Command::new(&binary)
                .env("FNBUILD_RUNTIME_LIBRARIES", runtime_libraries())
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .arg("build")
                .arg(&src)
                .args(["--runtime", runtime, "--quiet", "--no-cache"])
                .arg("--base")
                .arg(format!("oci:{}:base", base.display()))
                .arg("--output")
                .arg(format!("oci:{}:{example}", out.display())),
        );
        got.insert(example.to_string(), Value::String(manifest_digest(&out, example)));
    }
    let got = Value::Object(got);
    let file = repo_root().join(GOLDEN);
    if std::env::var_os("FNBUILD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, format!("{}\n", serde_json::to_string_pretty(&got).unwrap())).unwrap();
        eprintln!("recorded {got} in {GOLDEN}");
        return;
    }
    let want: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        got, want,
        "the example images differ from {GOLDEN}: a change meant to change images updates it \
         (FNBUILD_UPDATE_GOLDEN=1 cargo test --test golden); any other change must not"
    );
}
