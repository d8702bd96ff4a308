//! Helpers of the supply-chain tests (tests/supply_chain.rs, tests/signing.rs): the
//! third-party validators' virtualenv, builds with `--sbom`, and a function with dependencies.

use super::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The python of the validators' virtualenv (tests/support/sbom-validators.sh installs it once).
pub fn validators() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = run_ok(Command::new("bash").arg(repo_root().join("tests/support/sbom-validators.sh")));
        out.trim().to_string()
    })
}

/// Validates a document with spdx-tools (`spdx`) or cyclonedx-python-lib (`cyclonedx`).
pub fn validate(kind: &str, document: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document).unwrap();
    run_ok(
        Command::new(validators())
            .arg(repo_root().join("tests/support/validate-sbom.py"))
            .arg(kind)
            .arg(file.path()),
    )
}

/// fnbuild with an empty default cache of its own.
pub fn fnb() -> Command {
    let mut cmd = fnbuild();
    cmd.env("XDG_CACHE_HOME", temp_dir("sbom-xdg-").keep());
    cmd
}

pub fn build_ok(src: &Path, runtime: &str, base: &str, args: &[&str]) -> Value {
    let out = run_ok(
        fnb()
            .arg("build")
            .arg(src)
            .args(["--runtime", runtime, "--base", base, "--sbom", "--json"])
            .args(args),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {out}"))
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

pub fn node_function(dir: &Path) {
    write(&dir.join("handler.js"), "module.exports = { main: () => 'hello' };\n");
    write(
        &dir.join("package.json"),
        r#"{"name":"fn","version":"1.0.0","dependencies":{"lodash":"4.17.21","debug":"4.3.4","@sindresorhus/is":"4.6.0"}}"#,
    );
}
