//! Signing (issue 22): `build --sign-key` signs pushed images in cosign's format and the
//! provenance and SBOMs as DSSE attestations; `fnbuild verify --key` checks them. Keys are made
//! by openssl; signatures are checked by openssl (the cosign Simple Signing signature) and the
//! in-toto Python library (the DSSE envelopes), and tampering is tried as an attacker would.

mod common;

use common::supply_chain::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ECDSA P-256 key pair made by openssl: (private PKCS#8 PEM, public PEM).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub")));
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&private),
    );
    run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    (private, public)
}

/// `fnbuild verify IMAGE --key KEY`: (exit code, stdout lines, stderr).
fn verify(image: &str, key: &Path) -> (Option<i32>, Vec<String>, String) {
    let out = fnb().args(["verify", image, "--key"]).arg(key).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (
        out.status.code(),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET a registry path with curl; the body.
fn curl(url: &str, accept: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sf", "-H", &format!("Accept: {accept}"), url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}");
    out.stdout
}

fn put_index(reg: &Registry, repo: &str, tag: &str, index: &Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(index).unwrap()).unwrap();
    run_ok(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
    ]));
}

/// A signed build verifies with its public key, and independent tools agree: openssl verifies
/// the cosign Simple Signing signature, the in-toto library each DSSE attestation. Then each
/// kind of tampering makes `fnbuild verify` fail with its reason: another key, a removed
/// attestation, a swapped SBOM, a changed layer.
#[test]
fn signed_images_verify_and_tampering_is_caught() {
    let reg = Registry::start();
    let work = temp_dir("sbom-signed-");
    let (private, public) = key_pair(work.path(), "cosign");
    let (_, other_public) = key_pair(work.path(), "other");
    let src = work.path().join("src");
    node_function(&src);
    let base = base_images().node_ref_for("22");
    let image = reg.image("fn/signed:v1");
    let built = build_ok(
        &src,
        "nodejs22",
        &base,
        &[
            "--provenance",
            "--sign-key",
            private.to_str().unwrap(),
            "--push",
            &image,
        ],
    );
    let digest = built["digest"].as_str().unwrap().to_string();
    let (code, lines, stderr) = verify(&image, &public);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    for check in [
        "image",
        "signature",
        "attestation https://slsa.dev/provenance/v1",
        "attestation https://spdx.dev/Document",
        "attestation https://cyclonedx.org/bom",
        "sbom spdx",
        "sbom cyclonedx",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("ok   {check}:"))),
            "{check}: {lines:?}"
        );
    }

    // openssl: the Simple Signing payload names this digest and the signature is the key's.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let sig_manifest = json(&curl(
        &format!("{}/v2/fn/signed/manifests/sha256-{hex}.sig", reg.url()),
        "application/vnd.oci.image.manifest.v1+json",
    ));
    let layer = &sig_manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
    let payload = curl(
        &format!("{}/v2/fn/signed/blobs/{}", reg.url(), layer["digest"].as_str().unwrap()),
        "*/*",
    );
    assert_eq!(json(&payload)["critical"]["image"]["docker-manifest-digest"], digest);
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let (payload_file, sig_file) = (work.path().join("payload.json"), work.path().join("payload.sig"));
    std::fs::write(&payload_file, &payload).unwrap();
    std::fs::write(&sig_file, &signature).unwrap();
    let openssl = |key: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(key)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&payload_file)
            .output()
            .unwrap()
    };
    assert!(openssl(&public).status.success());
    assert!(!openssl(&other_public).status.success());

    // The in-toto library: every attestation verifies with the key, not with another.
    let index_url = format!("{}/v2/fn/signed/manifests/sha256-{hex}", reg.url());
    let index = json(&curl(&index_url, "application/vnd.oci.image.index.v1+json"));
    let envelopes: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == "application/vnd.dsse.envelope.v1+json")
        .collect();
    assert_eq!(envelopes.len(), 3, "provenance and two SBOM attestations: {index}");
    for m in &envelopes {
        let manifest = json(&curl(
            &format!("{}/v2/fn/signed/manifests/{}", reg.url(), m["digest"].as_str().unwrap()),
            "application/vnd.oci.image.manifest.v1+json",
        ));
        let envelope = curl(
            &format!(
                "{}/v2/fn/signed/blobs/{}",
                reg.url(),
                manifest["layers"][0]["digest"].as_str().unwrap()
            ),
            "*/*",
        );
        let file = work.path().join("envelope.json");
        std::fs::write(&file, &envelope).unwrap();
        let script = repo_root().join("tests/support/verify-dsse.py");
        let said = run_ok(Command::new(validators()).arg(&script).arg(&public).arg(&file));
        assert!(said.starts_with("verified: ") && said.contains(&digest), "{said}");
        assert!(
            said.contains(m["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()),
            "{said}"
        );
        let out = Command::new(validators())
            .arg(&script)
            .arg(&other_public)
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    }

    // Another key: every signature check fails.
    let (code, lines, stderr) = verify(&image, &other_public);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("checks failed"), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL signature: none of the 1 signatures")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("not signed by this key")), "{lines:?}");

    // A removed attestation (the provenance taken out of the referrers index).
    let mut without = index.clone();
    without["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["in-toto.io/predicate-type"] != "https://slsa.dev/provenance/v1");
    put_index(&reg, "fn/signed", &format!("sha256-{hex}"), &without);
    let (code, lines, _) = verify(&image, &public);
    assert_eq!(code, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL provenance: no signed https://slsa.dev/provenance/v1 attestation")),
        "{lines:?}"
    );

    // A swapped SBOM: another image's SPDX document listed for this one.
    let other_src = work.path().join("other");
    write(
        &other_src.join("handler.js"),
        "module.exports = { main: () => 'other' };\n",
    );
    let other = build_ok(
        &other_src,
        "nodejs22",
        &base,
        &["--push", &reg.image("fn/signed:other")],
    );
    let other_hex = other["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let other_index = json(&curl(
        &format!("{}/v2/fn/signed/manifests/sha256-{other_hex}", reg.url()),
        "application/vnd.oci.image.index.v1+json",
    ));
    let their_spdx = other_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .unwrap()
        .clone();
    let mut swapped = index.clone();
    for m in swapped["manifests"].as_array_mut().unwrap() {
        if m["artifactType"] == "application/spdx+json" {
            *m = their_spdx.clone();
        }
    }
    put_index(&reg, "fn/signed", &format!("sha256-{hex}"), &swapped);
    let (code, lines, _) = verify(&image, &public);
    assert_eq!(code, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL sbom spdx:") && l.contains("refers to another image")),
        "{lines:?}"
    );
    put_index(&reg, "fn/signed", &format!("sha256-{hex}"), &index);
    assert_eq!(verify(&image, &public).0, Some(0), "restored");

    // A changed layer (the function's, in the registry's storage).
    let function_layer = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "function")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let blob = reg.dir().join(format!(
        "storage/docker/registry/v2/blobs/sha256/{}/{function_layer}/data",
        &function_layer[..2]
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let (code, lines, _) = verify(&image, &public);
    assert_eq!(code, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL image:") && l.contains(&function_layer)),
        "{lines:?}"
    );
}

/// The signing key is out of the install scripts' reach: a postinstall that copies it into
/// node_modules copies nothing.
#[test]
fn install_scripts_cannot_read_the_signing_key() {
    let work = temp_dir("sbom-key-thief-");
    let (private, _) = key_pair(work.path(), "cosign");
    let src = work.path().join("src");
    write(&src.join("handler.js"), "module.exports = { main: () => 'hi' };\n");
    write(
        &src.join("package.json"),
        format!(
            r#"{{"name":"thief","version":"1.0.0","dependencies":{{"ms":"2.1.3"}},"scripts":{{"postinstall":"(echo ran; cat '{}') > node_modules/stolen.txt 2>&1; exit 0"}}}}"#,
            private.display()
        ),
    );
    let layout = work.path().join("layout");
    build_ok(
        &src,
        "nodejs22",
        &base_images().node_ref_for("22"),
        &[
            "--sign-key",
            private.to_str().unwrap(),
            "--output",
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let bundle = umoci_unpack(&layout, "v1");
    let stolen = std::fs::read_to_string(
        bundle
            .path()
            .join("rootfs/usr/src/app/function/node_modules/stolen.txt"),
    )
    .unwrap();
    let key = std::fs::read_to_string(&private).unwrap();
    assert!(
        !stolen.contains("PRIVATE KEY") && !stolen.contains(key.lines().nth(1).unwrap()),
        "{stolen}"
    );
    assert!(stolen.starts_with("ran"), "the script ran: {stolen}");
}
