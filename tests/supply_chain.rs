//! SBOMs (issue 22): `build --sbom` attaches an SPDX 2.3 and a CycloneDX 1.6 document to every
//! image, as referrers in a registry (distribution 2.8: the tag-schema fallback) and in OCI
//! layouts. Checked with tools nobody here wrote: spdx-tools and cyclonedx-python-lib validate
//! the documents, skopeo reads the fallback index, `npm query` and `cyclonedx-py environment`
//! list the packages of the unpacked image (umoci) to compare with ours.

mod common;

use common::supply_chain::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `fnbuild sbom IMAGE --format F [ARGS]`, which must succeed.
fn sbom(image: &str, format: &str, args: &[&str]) -> Vec<u8> {
    let out = fnb()
        .args(["sbom", image, "--format", format])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fnbuild sbom {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `name@version` of the packages installed under `prefix` (a path in the image), per the SPDX
/// document.
fn spdx_packages_under(doc: &Value, prefix: &str) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("Installed at {prefix}")))
        })
        .map(|p| format!("{}@{}", p["name"].as_str().unwrap(), p["versionInfo"].as_str().unwrap()))
        .collect()
}

/// A Node function with dependencies, built twice from copies of its source with fresh caches,
/// pushed and written to layouts: the same image and SBOM bytes; the documents are valid; the
/// registry's fallback index lists both; `npm query` on the unpacked image finds exactly the
/// packages the SBOM lists under the function's node_modules.
#[test]
fn node_sboms_are_attached_valid_complete_and_reproducible() {
    let reg = Registry::start();
    let work = temp_dir("sbom-node-");
    let (a, b) = (work.path().join("a"), work.path().join("copy-b"));
    node_function(&a);
    node_function(&b);
    let base = base_images().node_ref_for("22");
    let layout_a = work.path().join("layout-a");
    let layout_b = work.path().join("layout-b");
    // Each copy with a cache of its own, pushed under a tag and written to a layout of its own.
    let build = |src: &Path, tag: &str, layout: &Path, cache: &str| {
        let output = format!("oci:{}:v1", layout.display());
        let cache = work.path().join(cache).display().to_string();
        let target = reg.image(&format!("fn/hello:{tag}"));
        build_ok(
            src,
            "nodejs22",
            &base,
            &["--push", &target, "--output", &output, "--cache-dir", &cache],
        )
    };
    let first = build(&a, "v1", &layout_a, "cache-a");
    let second = build(&b, "v2", &layout_b, "cache-b");
    let digest = first["digest"].as_str().unwrap();
    assert_eq!(second["digest"], digest, "copies of one source give one image");

    // The registry: the image's fallback index names an SPDX and a CycloneDX artifact that
    // refer to the image.
    let tag = digest.replacen(':', "-", 1);
    let index = skopeo_inspect_raw(&format!("docker://{}", reg.image(&format!("fn/hello:{tag}"))));
    let kinds: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["application/spdx+json", "application/vnd.cyclonedx+json"],
        "{index}"
    );
    for m in index["manifests"].as_array().unwrap() {
        let artifact = skopeo_inspect_raw(&format!(
            "docker://{}@{}",
            reg.image("fn/hello"),
            m["digest"].as_str().unwrap()
        ));
        assert_eq!(artifact["subject"]["digest"], digest, "{artifact}");
        assert_eq!(artifact["artifactType"], m["artifactType"]);
    }

    // Reproducible: both layouts list the same artifacts (same digests); registry and layout
    // give the same documents.
    let artifacts = |layout: &Path| -> Vec<String> {
        let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.get("artifactType").is_some())
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(artifacts(&layout_a).len(), 2);
    assert_eq!(
        artifacts(&layout_a),
        artifacts(&layout_b),
        "the same SBOMs, byte for byte"
    );
    let spdx = sbom(&reg.image("fn/hello:v1"), "spdx", &[]);
    assert_eq!(spdx, sbom(&format!("oci:{}:v1", layout_b.display()), "spdx", &[]));
    let cyclonedx = sbom(&reg.image("fn/hello:v2"), "cyclonedx", &[]);
    assert_eq!(
        cyclonedx,
        sbom(&format!("oci:{}:v1", layout_a.display()), "cyclonedx", &[])
    );

    // Valid, by the reference implementations.
    assert!(validate("spdx", &spdx).starts_with("valid SPDX 2.3"));
    assert!(validate("cyclonedx", &cyclonedx).starts_with("valid CycloneDX 1.6"));

    // Complete: what npm finds installed in the image is what the SBOM lists there.
    let spdx = json(&spdx);
    let bundle = umoci_unpack(&layout_a, "v1");
    let function_dir = bundle.path().join("rootfs/usr/src/app/function");
    let found: Value = serde_json::from_str(&run_ok(
        Command::new("npm").args(["query", "*", "--prefix"]).arg(&function_dir),
    ))
    .unwrap();
    let npm: BTreeSet<String> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["location"].as_str().is_some_and(|l| !l.is_empty()))
        .map(|p| format!("{}@{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect();
    let ours = spdx_packages_under(&spdx, "/usr/src/app/function/node_modules/");
    assert_eq!(ours, npm);
    assert!(ours.contains("ms@2.1.2"), "debug's dependency: {ours:?}");
    // The runtime's libraries are listed too, and the base by digest.
    assert!(spdx_packages_under(&spdx, "/usr/src/app/").len() > ours.len() + 20);
    let base_pkg = &spdx["packages"][1];
    assert_eq!(base_pkg["SPDXID"], "SPDXRef-Base");
    assert_eq!(base_pkg["versionInfo"], first["base"]["digest"]);
    let lodash = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lodash")
        .unwrap();
    assert_eq!(lodash["licenseDeclared"], "MIT");
    assert_eq!(lodash["externalRefs"][0]["referenceLocator"], "pkg:npm/lodash@4.17.21");
    assert_eq!(
        lodash["checksums"][0]["algorithm"], "SHA512",
        "npm's integrity: {lodash}"
    );
}

/// A CycloneDX component as `name@version`, the name lowercased (PyPI names are case-insensitive).
fn name_at_version(c: &Value) -> String {
    format!(
        "{}@{}",
        c["name"].as_str().unwrap().to_lowercase(),
        c["version"].as_str().unwrap()
    )
}

/// A Python function with numpy: the SBOM lists, under the function's package directory,
/// exactly what `cyclonedx-py environment` (CycloneDX's own Python tool) finds there.
#[test]
fn python_sbom_lists_what_cyclonedx_py_finds() {
    let work = temp_dir("sbom-python-");
    let src = work.path().join("src");
    write(
        &src.join("handler.py"),
        "def main(event, context):\n    return 'hello'\n",
    );
    write(&src.join("requirements.txt"), "numpy==2.1.3\nrequests==2.32.3\n");
    let layout = work.path().join("layout");
    build_ok(
        &src,
        "python312",
        &base_images().python_ref(),
        &["--output", &format!("oci:{}:v1", layout.display())],
    );
    let image = format!("oci:{}:v1", layout.display());
    let cyclonedx = sbom(&image, "cyclonedx", &[]);
    assert!(validate("cyclonedx", &cyclonedx).starts_with("valid CycloneDX 1.6"));
    assert!(validate("spdx", &sbom(&image, "spdx", &[])).starts_with("valid SPDX 2.3"));
    let ours: BTreeSet<String> = json(&cyclonedx)["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["properties"][0]["value"]
                .as_str()
                .is_some_and(|p| p.starts_with("/kubeless/lib/"))
        })
        .map(name_at_version)
        .collect();

    let bundle = umoci_unpack(&layout, "v1");
    let site = bundle.path().join("rootfs/kubeless/lib");
    let reference = work.path().join("reference.cdx.json");
    let venv_bin = Path::new(validators()).parent().unwrap().to_path_buf();
    // -S: only the PYTHONPATH given, not the host interpreter's own packages.
    run_ok(
        Command::new(venv_bin.join("cyclonedx-py"))
            .args(["environment", "--output-reproducible", "-o"])
            .arg(&reference)
            .args(["-S", "/usr/bin/python3"])
            .env("PYTHONPATH", &site),
    );
    let theirs: BTreeSet<String> = json(&std::fs::read(&reference).unwrap())["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(name_at_version)
        .collect();
    assert_eq!(ours, theirs, "ours vs cyclonedx-py");
    assert!(
        ours.contains("numpy@2.1.3") && ours.contains("requests@2.32.3"),
        "{ours:?}"
    );
    let numpy = json(&cyclonedx)["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "numpy")
        .cloned()
        .unwrap();
    assert_eq!(numpy["purl"], "pkg:pypi/numpy@2.1.3");
    // numpy's License field is its licence text; the classifier says BSD.
    assert_eq!(numpy["licenses"][0]["license"]["name"], "BSD License", "{numpy}");
}

/// An index gets one SBOM pair per platform's image, each naming that platform and its base.
#[test]
fn each_platform_of_an_index_has_its_own_sboms() {
    let reg = Registry::start();
    let work = temp_dir("sbom-multi-");
    let src = work.path().join("src");
    write(&src.join("handler.js"), "module.exports = { main: () => 'hello' };\n");
    let result = build_ok(
        &src,
        "nodejs22",
        &format!("oci:{}:22", base_images().node22_multi.display()),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            &reg.image("fn/multi:v1"),
        ],
    );
    for platform in ["linux/amd64", "linux/arm64"] {
        let entry = result["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platform"] == platform)
            .unwrap();
        let digest = entry["digest"].as_str().unwrap();
        let index = skopeo_inspect_raw(&format!(
            "docker://{}",
            reg.image(&format!("fn/multi:{}", digest.replacen(':', "-", 1)))
        ));
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{platform}: {index}");
        let doc = json(&sbom(&reg.image("fn/multi:v1"), "cyclonedx", &["--platform", platform]));
        assert_eq!(doc["metadata"]["component"]["version"], digest);
        let arch = platform.rsplit('/').next().unwrap();
        assert!(
            doc["metadata"]["component"]["purl"]
                .as_str()
                .unwrap()
                .contains(&format!("arch={arch}")),
            "{}",
            doc["metadata"]["component"]
        );
        assert_eq!(doc["components"][0]["version"], entry["base"]["digest"]);
    }
    // The index itself has none: SBOMs describe images.
    let index_tag = result["digest"].as_str().unwrap().replacen(':', "-", 1);
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("docker://{}", reg.image(&format!("fn/multi:{index_tag}"))),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `fnbuild sbom` on an image without one, or on an output that cannot hold one: one line, exit 1.
#[test]
fn asking_for_a_missing_sbom_is_one_clear_line() {
    let work = temp_dir("sbom-missing-");
    let src: PathBuf = work.path().join("src");
    write(&src.join("handler.js"), "module.exports = { main: () => 'hello' };\n");
    let layout = work.path().join("layout");
    run_ok(fnb().arg("build").arg(&src).args([
        "--runtime",
        "nodejs22",
        "--base",
        &base_images().node_ref_for("22"),
        "--output",
        &format!("oci:{}:plain", layout.display()),
    ]));
    for (image, says) in [
        (
            format!("oci:{}:plain", layout.display()),
            "has no application/spdx+json SBOM attached (no referrers: build it with --sbom)",
        ),
        (
            "docker-archive:/tmp/x.tar".to_string(),
            "SBOMs are read from registries and OCI layouts",
        ),
    ] {
        let out = fnb().args(["sbom", &image]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(out.stdout.is_empty());
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(says), "{stderr}");
    }
}
