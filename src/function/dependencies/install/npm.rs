//! npm: finding it and its version (and Node.js's), and its commands: for a function's
//! packages, the download without scripts and then `npm rebuild` for the install scripts (only
//! when there are some); for the runtime libraries, `npm ci` of their lock file.

use super::{first_line, version_of, which, Installer, Invocation, Job, PipMode, Probe, Tool};
use crate::function::dependencies::plan::{Ecosystem, Plan};
use crate::function::dependencies::DependencyError;
use crate::function::runtime::Runtime;
use crate::oci::platform::Platform;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// npm behind the installer interface.
pub(super) struct Npm;

impl Tool for Npm {
    fn candidates(&self, _runtime: &Runtime) -> Vec<String> {
        vec!["npm".into(), "node".into()]
    }

    fn probe<'a>(&'a self, runtime: &'a Runtime) -> Probe<'a> {
        Box::pin(probe(runtime))
    }

    /// npm takes what the lock file or the registry says, whatever the platform.
    fn mode(&self, _installer: &Installer, _runtime: &Runtime, _target: &Platform) -> Option<PipMode> {
        None
    }

    fn invocations(&self, installer: &Installer, job: &Job) -> (Vec<Invocation>, PathBuf) {
        (
            invocations(installer, job.plan, job.staged, job.npmrc, job.platform),
            job.staged.join("node_modules"),
        )
    }

    /// `npm ci` of the lock file, without scripts (the libraries need none).
    fn library_invocation(
        &self,
        installer: &Installer,
        _runtime: &Runtime,
        staged: &Path,
        npmrc: Option<&Path>,
        _pip_conf: Option<&Path>,
    ) -> (Invocation, PathBuf) {
        let mut env = Vec::new();
        if let Some(rc) = npmrc {
            env.push(("NPM_CONFIG_USERCONFIG".into(), rc.into()));
        }
        let args = [
            "ci",
            "--omit=dev",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--no-progress",
            "--no-update-notifier",
        ]
        .map(OsString::from)
        .to_vec();
        let inv = Invocation {
            program: installer.program.clone(),
            args,
            env,
            cwd: staged.into(),
            label: "npm ci (runtime libraries)".into(),
            hint: None,
            credentials: true,
            scripts: None,
        };
        (inv, staged.join("node_modules"))
    }
}

/// Finds npm on PATH and asks it and Node.js for their versions.
async fn probe(runtime: &Runtime) -> Result<Installer, DependencyError> {
    let npm = which("npm").ok_or_else(|| DependencyError::InstallerMissing {
        tool: "npm".into(),
        file: runtime.spec.dependency_file.clone(),
    })?;
    let (npm_version, node_version) = tokio::join!(
        async {
            match npm_package_version(&npm) {
                Some(v) => Ok(v),
                None => version_of(&npm, &["--version"]).await,
            }
        },
        async {
            match which("node") {
                Some(node) => version_of(&node, &["--version"]).await.ok(),
                None => None,
            }
        }
    );
    let npm_version = npm_version.map_err(|e| DependencyError::InstallerBroken {
        program: npm.clone(),
        message: e,
    })?;
    let identity = format!(
        "npm {} node {}",
        first_line(&npm_version),
        node_version.as_deref().map(first_line).unwrap_or("unknown")
    );
    Ok(Installer {
        ecosystem: Ecosystem::Npm,
        program: npm,
        identity,
        python: None,
    })
}

/// npm's version from its own package.json (`npm --version` prints that, after loading all of
/// npm: a third of a second, on every build with an empty cache, as in a build Job). `npm` is
/// `<npm>/bin/npm-cli.js` or a link to it; anything else is asked.
fn npm_package_version(npm: &Path) -> Option<String> {
    let cli = std::fs::canonicalize(npm).ok()?;
    if cli.file_name()? != "npm-cli.js" {
        return None;
    }
    let package = cli.parent()?.parent()?.join("package.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(package).ok()?).ok()?;
    if doc["name"] != "npm" {
        return None;
    }
    doc["version"].as_str().map(str::to_string)
}

/// Node's name for `platform`'s architecture (`process.arch`, npm's `--cpu`).
fn node_arch(platform: &Platform) -> &str {
    match platform.architecture.as_str() {
        "amd64" => "x64",
        "386" => "ia32",
        "ppc64le" => "ppc64",
        other => other,
    }
}

/// The npm commands for `plan`, run in `staged`; the packages land in `staged/node_modules`.
/// First the download, with the credentials and without running any package's scripts; then
/// `npm rebuild`, which runs the install scripts (the packages' and the function's own
/// preinstall / install / postinstall) with the credentials gone.
///
/// For a platform other than this machine's, the download takes the optional packages that
/// are for the target (`--cpu`, `--os`, `--libc`: how sharp, esbuild and swc ship their
/// binaries), and the scripts are told the target as npm's `arch` and `platform`, which
/// prebuild-install and node-pre-gyp fetch binaries for.
fn invocations(
    installer: &Installer,
    plan: &Plan,
    staged: &Path,
    npmrc: Option<&Path>,
    platform: &Platform,
) -> Vec<Invocation> {
    let command = if plan.lock_file.is_some() { "ci" } else { "install" };
    let quiet = ["--no-audit", "--no-fund", "--no-progress", "--no-update-notifier"];
    let mut args: Vec<OsString> = vec![command.into()];
    for a in [
        "--omit=dev",
        // Local directories as real copies, not symlinks out of the layer.
        "--install-links",
        "--ignore-scripts",
    ]
    .into_iter()
    .chain(quiet)
    {
        args.push(a.into());
    }
    let host = Platform::host();
    let cross = !platform.same_machine(&host);
    let mut script_env: Vec<(OsString, OsString)> = Vec::new();
    if cross {
        let arch = node_arch(platform);
        for a in [
            format!("--os={}", platform.os),
            format!("--cpu={arch}"),
            "--libc=glibc".into(),
        ] {
            args.push(a.into());
        }
        for (k, v) in [
            ("npm_config_arch", arch),
            ("npm_config_target_arch", arch),
            ("npm_config_platform", platform.os.as_str()),
            ("npm_config_target_platform", platform.os.as_str()),
            ("npm_config_libc", "glibc"),
        ] {
            script_env.push((k.into(), v.into()));
        }
    }
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Some(rc) = npmrc {
        env.push(("NPM_CONFIG_USERCONFIG".into(), rc.into()));
    }
    let download = Invocation {
        program: installer.program.clone(),
        args,
        env,
        cwd: staged.into(),
        label: format!("npm {command}"),
        hint: None,
        credentials: true,
        scripts: None,
    };
    let mut rebuild_args: Vec<OsString> = vec!["rebuild".into()];
    rebuild_args.extend(quiet.map(OsString::from));
    let scripts = Invocation {
        program: installer.program.clone(),
        args: rebuild_args,
        env: script_env,
        cwd: staged.into(),
        label: "npm rebuild".into(),
        hint: None,
        credentials: false,
        scripts: Some(scripts_needed),
    };
    vec![download, scripts]
}

/// Whether `npm rebuild` has anything to run after a download without scripts: an install
/// script (or a `binding.gyp`, which npm builds) in the function's package.json or any
/// installed package's.
fn scripts_needed(staged: &Path) -> bool {
    let has_scripts = |dir: &Path| {
        if dir.join("binding.gyp").is_file() {
            return true;
        }
        let Ok(bytes) = std::fs::read(dir.join("package.json")) else {
            return false;
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        ["preinstall", "install", "postinstall"]
            .iter()
            .any(|k| doc["scripts"].get(k).is_some())
    };
    if has_scripts(staged) {
        return true;
    }
    walkdir::WalkDir::new(staged.join("node_modules"))
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() == "package.json")
        .any(|e| e.path().parent().is_some_and(has_scripts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_version_comes_from_its_package_json_as_npm_version_says() {
        let Some(npm) = which("npm") else { return };
        let out = std::process::Command::new(&npm).arg("--version").output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(npm_package_version(&npm), Some(said));
        // Not npm's layout: asked instead.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("npm"), "#!/bin/sh\n").unwrap();
        assert_eq!(npm_package_version(&dir.path().join("npm")), None);
    }
}
