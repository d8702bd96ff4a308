//! `fnbuild verify IMAGE --key KEY.pub`: checks, against the public key, what a signed build
//! attaches to an image in a registry: the image's blobs are the ones its manifest names, its
//! cosign signature (and its index's), each DSSE attestation (signature, subject, predicate
//! type), and that each SBOM describes this image. One line per check; any failure exits 1.

use super::cosign;
use super::keys::VerifyingKey;
use super::{pae, provenance, DSSE_ENVELOPE, IN_TOTO_PAYLOAD};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::registry::{Client, RegistryOptions};
use crate::sbom::{CYCLONEDX_JSON, SPDX_JSON};
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The image in a registry: REF or docker://REF.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The public key (PEM, BEGIN PUBLIC KEY: cosign.pub, or `openssl pkey -pubout`).
    #[arg(long, value_name = "KEY.pub")]
    key: std::path::PathBuf,
    /// The platform's image, when IMAGE is an index (default: linux on this machine's architecture).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Print one JSON object (each check's name, result and detail) instead of lines.
    #[arg(long)]
    json: bool,
    /// Allow plain HTTP (and unverified TLS) for this registry; loopback registries need no flag.
    #[arg(long, value_name = "HOST[:PORT]", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// A docker config.json to take registry credentials from.
    #[arg(long, value_name = "FILE")]
    registry_config: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    digest: String,
    ok: bool,
    checks: Vec<Check>,
}

/// Runs every check and prints the report; an error when one failed.
pub async fn run(args: VerifyArgs) -> Result<()> {
    let name = args.image.strip_prefix("docker://").unwrap_or(&args.image);
    let reference: Reference = name.parse().map_err(|e| anyhow::anyhow!("{}: {e}", args.image))?;
    let key = VerifyingKey::from_file(&args.key).context("--key")?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let client = Client::new(RegistryOptions {
        insecure_registries: args.insecure_registry.clone(),
        registry_config: args.registry_config.clone(),
        platform: platform.clone(),
        ..RegistryOptions::default()
    })?;
    let image = client.pull_manifest_for(&reference, &platform).await?;
    let digest: Digest = image.digest.parse().map_err(anyhow::Error::msg)?;
    let mut checks = Vec::new();
    let mut check = |name: &str, result: Result<String>| {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        checks.push(Check {
            check: name.to_string(),
            ok,
            detail,
        });
    };
    check("image", blobs_intact(&client, &reference, &image.bytes).await);
    if let Some(index) = &image.index_digest {
        let index: Digest = index.parse().map_err(anyhow::Error::msg)?;
        check("index signature", signature(&client, &reference, &index, &key).await);
    }
    check("signature", signature(&client, &reference, &digest, &key).await);
    let listed = client.referrers(&reference, &digest).await;
    let listed = match listed {
        Ok(l) => l,
        Err(e) => {
            check("referrers", Err(e.into()));
            Vec::new()
        }
    };
    let mut predicates = Vec::new();
    for (artifact, _) in listed.iter().filter(|(_, k)| k == DSSE_ENVELOPE) {
        let result = attestation(&client, &reference, artifact, &digest, &key).await;
        let label = match &result {
            Ok((predicate, _)) => {
                predicates.push(predicate.clone());
                format!("attestation {predicate}")
            }
            Err(_) => format!("attestation {artifact}"),
        };
        check(&label, result.map(|(_, d)| d));
    }
    if !predicates.iter().any(|p| p == provenance::PREDICATE_TYPE) {
        check(
            "provenance",
            Err(anyhow::anyhow!(
                "no signed {} attestation refers to the image",
                provenance::PREDICATE_TYPE
            )),
        );
    }
    for (kind, label) in [(SPDX_JSON, "sbom spdx"), (CYCLONEDX_JSON, "sbom cyclonedx")] {
        let result = match listed.iter().find(|(_, k)| k == kind) {
            None => Err(anyhow::anyhow!("no {kind} SBOM refers to the image")),
            Some((artifact, _)) => sbom(&client, &reference, artifact, &digest, kind).await,
        };
        check(label, result);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let ok = failed == 0;
    let report = Report {
        image: args.image.clone(),
        digest: digest.to_string(),
        ok,
        checks,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("JSON serialises"));
    } else {
        for c in &report.checks {
            println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.check, c.detail);
        }
    }
    if !ok {
        bail!("{}: {failed} of {} checks failed", args.image, report.checks.len());
    }
    Ok(())
}

/// Every blob the manifest names, downloaded and hashed.
async fn blobs_intact(client: &Client, r: &Reference, manifest: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(manifest).context("the manifest is not JSON")?;
    let work = tempfile::tempdir().context("cannot make a scratch directory")?;
    let descriptors: Vec<&Value> = std::iter::once(&v["config"])
        .chain(v["layers"].as_array().into_iter().flatten())
        .collect();
    for (i, d) in descriptors.iter().enumerate() {
        let digest = d["digest"].as_str().context("a descriptor has no digest")?;
        let size = d["size"].as_u64().unwrap_or(0);
        client
            .download_blob(r, digest, size, &work.path().join(i.to_string()))
            .await
            .with_context(|| format!("blob {digest}"))?;
    }
    Ok(format!("{} blobs match their digests", descriptors.len()))
}

/// A cosign signature of `subject` by `key` in the `.sig` tag.
async fn signature(client: &Client, r: &Reference, subject: &Digest, key: &VerifyingKey) -> Result<String> {
    let tag = cosign::signature_tag(subject);
    let (manifest, _, _) = client
        .raw_manifest(r, &tag)
        .await
        .with_context(|| format!("no signature (the tag {tag})"))?;
    let found = cosign::signatures_in(&manifest);
    for (payload_digest, size, sig) in &found {
        let payload = client.fetch_blob(r, payload_digest.as_str(), *size).await?;
        if !key.verify(&payload, sig) {
            continue;
        }
        let p: Value = serde_json::from_slice(&payload).context("a signed payload is not JSON")?;
        let named = p["critical"]["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default();
        if named != subject.as_str() {
            bail!("the payload signed by this key names {named}, not this image");
        }
        return Ok(format!("cosign signature by this key ({tag})"));
    }
    bail!("none of the {} signatures in {tag} is by this key", found.len())
}

/// A DSSE attestation: the envelope's bytes as named, signed by `key`, about this image.
/// Returns its predicate type.
async fn attestation(
    client: &Client,
    r: &Reference,
    artifact: &Digest,
    subject: &Digest,
    key: &VerifyingKey,
) -> Result<(String, String)> {
    let document = client.referrer_document(r, artifact, subject).await?;
    let envelope: Value = serde_json::from_slice(&document).context("the envelope is not JSON")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if envelope["payloadType"] != IN_TOTO_PAYLOAD {
        bail!("the envelope does not hold an in-toto statement");
    }
    let payload = b64
        .decode(envelope["payload"].as_str().context("the envelope has no payload")?)
        .context("the payload is not base64")?;
    let signed = envelope["signatures"].as_array().into_iter().flatten().any(|s| {
        s["sig"]
            .as_str()
            .and_then(|sig| b64.decode(sig).ok())
            .is_some_and(|sig| key.verify(&pae(IN_TOTO_PAYLOAD, &payload), &sig))
    });
    let statement: Value = serde_json::from_slice(&payload).context("the statement is not JSON")?;
    let predicate = statement["predicateType"].as_str().unwrap_or_default().to_string();
    if !signed {
        bail!("{predicate}: not signed by this key");
    }
    let about = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(subject.hex()));
    if !about {
        bail!("{predicate}: the statement is about another image");
    }
    Ok((predicate, "signed by this key, about this image".into()))
}

/// An SBOM whose described image is this one.
async fn sbom(client: &Client, r: &Reference, artifact: &Digest, subject: &Digest, kind: &str) -> Result<String> {
    let document = client.referrer_document(r, artifact, subject).await?;
    let v: Value = serde_json::from_slice(&document).context("the SBOM is not JSON")?;
    let described = match kind {
        SPDX_JSON => v["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["SPDXID"] == "SPDXRef-Image")
            .and_then(|p| p["versionInfo"].as_str()),
        _ => v["metadata"]["component"]["version"].as_str(),
    };
    match described {
        Some(d) if d == subject.as_str() => Ok("describes this image".into()),
        Some(d) => bail!("it describes {d}, not this image"),
        None => bail!("it names no image"),
    }
}
