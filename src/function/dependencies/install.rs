//! Running the ecosystem's own installer (the host's `npm` or `pip`) in a staging directory,
//! its output going to the log line by line as it comes, and its last lines into the error
//! when it fails. Credentials files are handed over by environment variable only.
//! (Over 600 lines with its tests, from line ~960; the probe and the commands belong together:
//! both decide what the cache key says about the installer. The house issue puts npm and pip
//! behind one installer interface, which splits it.)

use super::plan::{Ecosystem, Plan};
use super::sandbox::Sandbox;
use super::{DependencyError, Redactor};
use crate::function::fs::is_program;
use crate::function::runtime::Runtime;
use crate::function::source::SourceEntry;
use crate::oci::layer::{Content, EntryKind};
use crate::oci::platform::Platform;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Lines of installer output kept for the error message.
const KEPT_LINES: usize = 200;
/// Lines of it an error message carries.
const ERROR_LINES: usize = 4;
/// Longest installer line an error message carries.
const ERROR_LINE_CHARS: usize = 300;

/// The installer found on this machine, and what identifies its behaviour (part of the cache key).
#[derive(Debug, Clone)]
pub struct Installer {
    pub ecosystem: Ecosystem,
    pub program: PathBuf,
    /// e.g. `npm 11.19.1 node v20.20.2`, `pip 23.2.1 python 3.11`.
    pub identity: String,
    /// pip's own Python version (`3.11`).
    pub python: Option<String>,
}

/// How pip picks distributions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipMode {
    /// pip's Python is the runtime's, on the same machine type: pip chooses as it would at home
    /// (source distributions allowed).
    Native,
    /// Wheels only, chosen for the runtime's Python version and platform tags.
    Cross {
        python_version: String,
        platforms: Vec<String>,
    },
}

/// A remembered probe is trusted this long (and only while its fingerprint holds).
const PROBE_MEMO_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(serde::Serialize, serde::Deserialize)]
struct ProbeMemo {
    program: PathBuf,
    identity: String,
    python: Option<String>,
    created: u64,
}

/// Like [`probe`], remembering the answer under `memo_dir` (asking `pip --version` costs most
/// of a second) for as long as the installer's files, the PATH and the environment variables
/// that pick an interpreter are unchanged, and a day at most.
pub async fn probe_cached(
    ecosystem: Ecosystem,
    runtime: &Runtime,
    memo_dir: Option<&Path>,
) -> Result<Installer, DependencyError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let memo = memo_dir.map(|d| {
        d.join(format!(
            "{}.json",
            fingerprint(ecosystem, &candidates(ecosystem, runtime))
        ))
    });
    if let Some(path) = &memo {
        if let Some(m) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProbeMemo>(&b).ok())
        {
            if now.saturating_sub(m.created) < PROBE_MEMO_TTL.as_secs() && m.program.is_file() {
                tracing::debug!(installer = %m.identity, "installer version remembered");
                return Ok(Installer {
                    ecosystem,
                    program: m.program,
                    identity: m.identity,
                    python: m.python,
                });
            }
        }
    }
    let installer = probe(ecosystem, runtime).await?;
    if let Some(path) = &memo {
        let record = ProbeMemo {
            program: installer.program.clone(),
            identity: installer.identity.clone(),
            python: installer.python.clone(),
            created: now,
        };
        let write = || -> std::io::Result<()> {
            let dir = path.parent().expect("memo path has a parent");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, &record)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!(error = %e, "cannot remember the installer's version");
        }
    }
    Ok(installer)
}

/// The program names a probe tries, in order.
fn candidates(ecosystem: Ecosystem, runtime: &Runtime) -> Vec<String> {
    match ecosystem {
        Ecosystem::Npm => vec!["npm".into(), "node".into()],
        Ecosystem::Pip => {
            let mut names = Vec::new();
            if let Some(v) = &runtime.spec.python_version {
                names.push(format!("pip{v}"));
            }
            names.extend(["pip3".to_string(), "pip".to_string()]);
            names
        }
    }
}

/// What decides a probe's answer: the PATH, the variables that select interpreters, and the
/// identity (path, size, time, inode; content for small scripts) of each candidate, of its
/// `#!` interpreter, and of pyenv's selected versions of it.
fn fingerprint(ecosystem: Ecosystem, names: &[String]) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut put = |k: &str, v: &[u8]| {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    };
    put("fnbuild-probe-v1", ecosystem.name().as_bytes());
    for var in [
        "PATH",
        "PYENV_VERSION",
        "PYENV_ROOT",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "NODE_OPTIONS",
        "NVM_BIN",
        "VOLTA_HOME",
    ] {
        put(var, std::env::var_os(var).unwrap_or_default().as_encoded_bytes());
    }
    let describe = |label: &str, path: &Path, put: &mut dyn FnMut(&str, &[u8])| -> Option<Vec<u8>> {
        let real = std::fs::canonicalize(path).ok()?;
        let m = std::fs::metadata(&real).ok()?;
        put(
            label,
            format!(
                "{} {} {} {} {}",
                real.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino()
            )
            .as_bytes(),
        );
        (m.len() < 64 * 1024).then(|| std::fs::read(&real).ok()).flatten()
    };
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    let pyenv_versions: Vec<String> = pyenv_root
        .as_ref()
        .and_then(|r| std::fs::read_to_string(r.join("version")).ok())
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    put("pyenv-global", pyenv_versions.join(" ").as_bytes());
    for name in names {
        let Some(program) = which(name) else {
            put("absent", name.as_bytes());
            continue;
        };
        let Some(content) = describe(name, &program, &mut put) else {
            continue;
        };
        if let Some(line) = content
            .strip_prefix(b"#!")
            .and_then(|c| c.split(|&b| b == b'\n').next())
        {
            put("script", &content);
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_whitespace();
            let interpreter = match words.next() {
                Some(env) if env.ends_with("/env") => words.find(|w| !w.starts_with('-')).and_then(which),
                Some(path) => Some(PathBuf::from(path)),
                None => None,
            };
            if let Some(i) = interpreter {
                describe("interpreter", &i, &mut put);
            }
        }
        if let Some(root) = &pyenv_root {
            for v in &pyenv_versions {
                describe("pyenv", &root.join("versions").join(v).join("bin").join(name), &mut put);
            }
        }
    }
    hex::encode(h.finalize())
}

/// Finds the installer on PATH and asks it (and npm's Node.js) for its version.
pub async fn probe(ecosystem: Ecosystem, runtime: &Runtime) -> Result<Installer, DependencyError> {
    match ecosystem {
        Ecosystem::Npm => {
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
                ecosystem,
                program: npm,
                identity,
                python: None,
            })
        }
        Ecosystem::Pip => {
            // pip for the runtime's Python first, then the usual names; pyenv-style shims that
            // do not work for this directory fail `--version` and are skipped.
            let mut names = Vec::new();
            if let Some(v) = &runtime.spec.python_version {
                names.push(format!("pip{v}"));
            }
            names.extend(["pip3".to_string(), "pip".to_string()]);
            let mut last_error = None;
            let pyenv = Pyenv::from_env();
            for name in &names {
                let Some(found) = which(name) else { continue };
                // A pyenv shim is a shell script that picks the real pip on every call: run that
                // pip directly (the probe and the install then agree), or skip the name as the
                // shim would fail.
                let program = match pyenv.as_ref().map(|p| p.resolve_shim(&found, name)) {
                    Some(Some(Some(real))) => real,
                    Some(Some(None)) => continue,
                    _ => found,
                };
                if let Some((pip_version, python)) = pip_version_from_files(&program) {
                    return Ok(Installer {
                        ecosystem,
                        program,
                        identity: format!("pip {pip_version} python {python}"),
                        python: Some(python),
                    });
                }
                match version_of(&program, &["--version"]).await {
                    Ok(out) => {
                        let (pip_version, python) =
                            parse_pip_version(&out).ok_or_else(|| DependencyError::InstallerBroken {
                                program: program.clone(),
                                message: format!("unexpected `--version` output: {}", first_line(&out)),
                            })?;
                        let identity = format!("pip {pip_version} python {python}");
                        return Ok(Installer {
                            ecosystem,
                            program,
                            identity,
                            python: Some(python),
                        });
                    }
                    Err(e) => last_error = Some(DependencyError::InstallerBroken { program, message: e }),
                }
            }
            Err(last_error.unwrap_or(DependencyError::InstallerMissing {
                tool: names.join(", "),
                file: runtime.spec.dependency_file.clone(),
            }))
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// `pip 23.2.1 from /x/site-packages/pip (python 3.11)` → (`23.2.1`, `3.11`).
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

/// pyenv's view of this process: where its shims are and which versions it selects.
struct Pyenv {
    root: PathBuf,
    /// The selected versions, in order (`system` included), as `pyenv version-name` lists them.
    versions: Vec<String>,
}

impl Pyenv {
    /// pyenv's root, when a pyenv is there, and its selection: `PYENV_VERSION`, else the
    /// nearest `.python-version` above the scratch directory (where installs run), else the
    /// global `version` file, else `system`.
    fn from_env() -> Option<Pyenv> {
        let root = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
        if !root.join("shims").is_dir() {
            return None;
        }
        let split = |s: &str| -> Vec<String> {
            s.split(|c: char| c == ':' || c.is_whitespace())
                .filter(|v| !v.is_empty() && !v.starts_with('#'))
                .map(String::from)
                .collect()
        };
        let from_file = |p: &Path| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| split(&s))
                .filter(|v| !v.is_empty())
        };
        let versions = std::env::var("PYENV_VERSION")
            .ok()
            .map(|v| split(&v))
            .filter(|v| !v.is_empty())
            .or_else(|| {
                std::env::temp_dir()
                    .ancestors()
                    .find_map(|d| from_file(&d.join(".python-version")))
            })
            .or_else(|| from_file(&root.join("version")))
            .unwrap_or_else(|| vec!["system".into()]);
        Some(Pyenv { root, versions })
    }

    /// For `program` (found on PATH as `name`): `None` when it is not one of pyenv's shims;
    /// else the program the shim would run, or `Some(None)` when no selected version has it.
    fn resolve_shim(&self, program: &Path, name: &str) -> Option<Option<PathBuf>> {
        let shims = self.root.join("shims");
        if program.parent() != Some(shims.as_path()) {
            return None;
        }
        Some(self.versions.iter().find_map(|v| {
            if v == "system" {
                let path = std::env::var_os("PATH")?;
                let dirs: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| *d != shims).collect();
                return which_in(name, &dirs);
            }
            let p = self.root.join("versions").join(v).join("bin").join(name);
            is_program(&p).then_some(p)
        }))
    }
}

/// pip's version and its Python's (`23.2.1`, `3.11`) read from the files, without running pip
/// (which imports most of itself to print its version: a third of a second and more, on every
/// build with an empty cache, as in a build Job). Only for the layout pip itself installs: a
/// script `#!PREFIX/bin/pythonX.Y` (or a link to it) that runs `pip._internal`, and pip in
/// `PREFIX/lib/pythonX.Y/site-packages`; anything else is asked.
fn pip_version_from_files(pip: &Path) -> Option<(String, String)> {
    let script = std::fs::read(pip).ok().filter(|b| b.len() < 64 * 1024)?;
    let script = String::from_utf8(script).ok()?;
    let interpreter = PathBuf::from(script.strip_prefix("#!")?.lines().next()?.trim());
    if !interpreter.is_absolute() || !script.contains("from pip._internal") {
        return None;
    }
    let real = std::fs::canonicalize(&interpreter).ok()?;
    let python = real.file_name()?.to_str()?.strip_prefix("python")?.to_string();
    let (major, minor) = python.split_once('.')?;
    if major.parse::<u32>().is_err() || minor.parse::<u32>().is_err() {
        return None;
    }
    // A virtualenv's interpreter links to the base one; its own packages are beside the link.
    let prefix = interpreter.parent()?.parent()?;
    let init = prefix.join(format!("lib/python{python}/site-packages/pip/__init__.py"));
    let version = std::fs::read_to_string(init).ok()?.lines().find_map(|l| {
        let v = l.strip_prefix("__version__")?.trim_start().strip_prefix('=')?.trim();
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })?;
    (!version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+'))
    .then_some((version, python))
}

fn parse_pip_version(out: &str) -> Option<(String, String)> {
    let line = first_line(out);
    let version = line.strip_prefix("pip ")?.split_whitespace().next()?.to_string();
    let python = line.rsplit_once("(python ")?.1.trim_end_matches(')').trim().to_string();
    Some((version, python))
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    which_in(name, &std::env::split_paths(&path).collect::<Vec<_>>())
}

fn which_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|dir| dir.join(name)).find(|p| is_program(p))
}

async fn version_of(program: &Path, args: &[&str]) -> Result<String, String> {
    // In a neutral directory, as the install runs in one (version managers look at the working directory).
    let run = tokio::process::Command::new(program)
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| "did not answer `--version` within 60 s".to_string())?
        .map_err(|e| format!("cannot run it: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || stdout.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output");
        return Err(format!("`--version` failed ({}): {why}", out.status));
    }
    Ok(stdout)
}

/// How pip should pick distributions for `runtime` on `target`.
pub fn pip_mode(installer: &Installer, runtime: &Runtime, target: &Platform) -> PipMode {
    let python_version = runtime.spec.python_version.clone().unwrap_or_default();
    let arch = wheel_arch(target);
    let host_matches = target.os == "linux" && cfg!(target_os = "linux") && std::env::consts::ARCH == arch;
    if host_matches && installer.python.as_deref() == Some(python_version.as_str()) {
        return PipMode::Native;
    }
    // manylinux_2_<N> down to 2_17, then manylinux2014 (which pip widens to 2010 and 1).
    let newest: u32 = runtime
        .spec
        .manylinux_glibc
        .as_deref()
        .and_then(|g| g.strip_prefix("2."))
        .and_then(|m| m.parse().ok())
        .unwrap_or(17);
    let mut platforms: Vec<String> = (18..=newest.max(17))
        .rev()
        .map(|m| format!("manylinux_2_{m}_{arch}"))
        .collect();
    platforms.push(format!("manylinux2014_{arch}"));
    PipMode::Cross {
        python_version,
        platforms,
    }
}

/// The machine name wheels use for `platform`'s architecture (`x86_64`, `aarch64`, ...).
fn wheel_arch(platform: &Platform) -> String {
    match (platform.architecture.as_str(), platform.variant.as_deref()) {
        ("amd64", _) => "x86_64".into(),
        ("arm64", _) => "aarch64".into(),
        ("386", _) => "i686".into(),
        ("arm", Some("v6")) => "armv6l".into(),
        ("arm", _) => "armv7l".into(),
        (other, _) => other.into(),
    }
}

/// Copies the plan's inputs into `dir` (created), as the installer's working directory.
pub fn stage(inputs: &[SourceEntry], dir: &Path) -> Result<(), DependencyError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DependencyError::Stage { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    for entry in inputs {
        let target = dir.join(&entry.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        match &entry.kind {
            EntryKind::Dir => std::fs::create_dir_all(&target).map_err(write_err(&target))?,
            EntryKind::Symlink { target: link } => {
                std::os::unix::fs::symlink(link, &target).map_err(write_err(&target))?
            }
            EntryKind::File { content, executable } => {
                match content {
                    Content::Path(p) => {
                        std::fs::copy(p, &target).map_err(|source| DependencyError::Read {
                            path: p.clone(),
                            source,
                        })?;
                    }
                    Content::Bytes(b) => std::fs::write(&target, b).map_err(write_err(&target))?,
                }
                use std::os::unix::fs::PermissionsExt;
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(write_err(&target))?;
            }
        }
    }
    Ok(())
}

/// What the installer is told to do.
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// `npm ci`, `pip install`: how errors name the command.
    pub label: String,
    /// Extra words for a failure (what pip was limited to).
    pub hint: Option<String>,
    /// Whether the package-registry credentials take part (the downloading phase): no code of
    /// the packages or the function runs then. Otherwise they are hidden.
    pub credentials: bool,
}

/// The npm commands for `plan`, run in `staged`; the packages land in `staged/node_modules`.
/// First the download, with the credentials and without running any package's scripts; then
/// `npm rebuild`, which runs the install scripts (the packages' and the function's own
/// preinstall / install / postinstall) with the credentials gone.
pub fn npm_invocations(installer: &Installer, plan: &Plan, staged: &Path, npmrc: Option<&Path>) -> Vec<Invocation> {
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
    };
    let mut rebuild_args: Vec<OsString> = vec!["rebuild".into()];
    rebuild_args.extend(quiet.map(OsString::from));
    let scripts = Invocation {
        program: installer.program.clone(),
        args: rebuild_args,
        env: Vec::new(),
        cwd: staged.into(),
        label: "npm rebuild".into(),
        hint: None,
        credentials: false,
    };
    vec![download, scripts]
}

/// Whether `npm rebuild` has anything to run after a download without scripts: an install
/// script (or a `binding.gyp`, which npm builds) in the function's package.json or any
/// installed package's.
pub fn npm_scripts_needed(staged: &Path) -> bool {
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

/// The pip commands for `plan`, run in `staged`, installing into `target`. With a pip.conf
/// (credentials), the packages are first downloaded as wheels only (installing a wheel runs no
/// code; building a source distribution would run the package's code with the credentials in
/// reach), then installed from those files without the credentials and without an index.
#[allow(clippy::too_many_arguments)]
pub fn pip_invocations(
    installer: &Installer,
    plan: &Plan,
    staged: &Path,
    target: &Path,
    mode: &PipMode,
    pip_conf: Option<&Path>,
    epoch: u64,
) -> Vec<Invocation> {
    let mut selection: Vec<OsString> = Vec::new();
    let mut hint = None;
    match mode {
        PipMode::Native => {}
        PipMode::Cross {
            python_version,
            platforms,
        } => {
            selection.extend(["--only-binary=:all:", "--implementation", "cp", "--python-version"].map(OsString::from));
            selection.push(python_version.into());
            for p in platforms {
                selection.push("--platform".into());
                selection.push(p.into());
            }
            hint = Some(format!(
                "pip runs on Python {} here, so it takes only wheels built for CPython {python_version} on {}: check the name and version, or pick a version that has such a wheel",
                installer.python.as_deref().unwrap_or("?"),
                platforms.first().map(String::as_str).unwrap_or("linux"),
            ));
        }
    }
    let env: Vec<(OsString, OsString)> = vec![
        ("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into()),
        ("PIP_NO_INPUT".into(), "1".into()),
        ("PIP_PROGRESS_BAR".into(), "off".into()),
        ("PIP_ROOT_USER_ACTION".into(), "ignore".into()),
        ("PIP_NO_WARN_SCRIPT_LOCATION".into(), "1".into()),
        // Bytecode (native mode) hashed instead of time-stamped: the same bytes every time.
        ("SOURCE_DATE_EPOCH".into(), epoch.to_string().into()),
    ];
    let install_args = |extra: &[OsString]| {
        let mut args: Vec<OsString> = vec![
            "install".into(),
            "--target".into(),
            target.into(),
            "--requirement".into(),
            (&plan.dependency_file).into(),
        ];
        if matches!(mode, PipMode::Cross { .. }) {
            // Bytecode compiled by pip's own Python would be for the wrong version.
            args.push("--no-compile".into());
        }
        args.extend(selection.iter().cloned());
        args.extend(extra.iter().cloned());
        args
    };
    let Some(conf) = pip_conf else {
        return vec![Invocation {
            program: installer.program.clone(),
            args: install_args(&[]),
            env,
            cwd: staged.into(),
            label: "pip install".into(),
            hint,
            credentials: false,
        }];
    };
    let wheels = target.with_file_name("wheels");
    let mut download_args: Vec<OsString> = vec![
        "download".into(),
        "--dest".into(),
        wheels.clone().into(),
        "--requirement".into(),
        (&plan.dependency_file).into(),
    ];
    download_args.extend(selection.iter().cloned());
    if matches!(mode, PipMode::Native) {
        download_args.push("--only-binary=:all:".into());
    }
    let mut download_env = env.clone();
    download_env.push(("PIP_CONFIG_FILE".into(), conf.into()));
    let download_hint = format!(
        "with --pip-conf, fnbuild takes packages as wheels only: building one from source would run its code while the index credentials are in reach{}",
        hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default()
    );
    let mut offline_env = env;
    offline_env.push(("PIP_CONFIG_FILE".into(), "/dev/null".into()));
    vec![
        Invocation {
            program: installer.program.clone(),
            args: download_args,
            env: download_env,
            cwd: staged.into(),
            label: "pip download".into(),
            hint: Some(download_hint),
            credentials: true,
        },
        Invocation {
            program: installer.program.clone(),
            args: install_args(&["--no-index".into(), "--find-links".into(), wheels.into()]),
            env: offline_env,
            cwd: staged.into(),
            label: "pip install".into(),
            hint,
            credentials: false,
        },
    ]
}

/// Runs the installer in `sandbox`, logging its output as it comes; fails with its last lines.
pub fn run(inv: &Invocation, redactor: &Redactor, sandbox: &Sandbox) -> Result<(), DependencyError> {
    tracing::info!("running {} in a staging directory", inv.label);
    let broken = |message: String| DependencyError::InstallerBroken {
        program: inv.program.clone(),
        message,
    };
    let command = |isolate: bool| -> Result<Command, DependencyError> {
        let mut c = Command::new(&inv.program);
        c.args(&inv.args)
            .current_dir(&inv.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sandbox
            .apply(&mut c, &inv.env, isolate)
            .map_err(|e| broken(format!("cannot prepare its sandbox: {e}")))?;
        Ok(c)
    };
    let mut child = match command(true)?.spawn() {
        Ok(child) => child,
        // No namespaces here (an unprivileged container): without the hidden view.
        Err(e) if !sandbox.existing().is_empty() && e.raw_os_error().is_some() => {
            tracing::warn!(
                error = %e,
                hidden = ?sandbox.existing(),
                "cannot give {} a view without the build's credential files (no mount namespace here); the layer scan still keeps them out of the image",
                inv.label
            );
            command(false)?
                .spawn()
                .map_err(|e| broken(format!("cannot run it: {e}")))?
        }
        Err(e) => return Err(broken(format!("cannot run it: {e}"))),
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                buf.clear();
            }
        }));
    }
    drop(tx);
    let tool = inv.label.split_whitespace().next().unwrap_or("installer").to_string();
    let mut kept: VecDeque<String> = VecDeque::new();
    for line in rx {
        let line = redactor.redact(&clean(&line));
        if line.trim().is_empty() {
            continue;
        }
        tracing::info!("{tool}: {line}");
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|e| DependencyError::InstallerBroken {
        program: inv.program.clone(),
        message: format!("lost it: {e}"),
    })?;
    if status.success() {
        return Ok(());
    }
    let mut last = error_lines(&tool, kept.make_contiguous());
    if let Some(hint) = &inv.hint {
        if last.contains("No matching distribution") || last.contains("Could not find a version") {
            last = format!("{last} ({hint})");
        }
    }
    Err(DependencyError::InstallFailed {
        command: inv.label.clone(),
        status: status.to_string(),
        output: last,
    })
}

/// Printable text without control characters (colour codes, carriage returns).
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI escape: ESC [ ... final byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

/// The lines that say what went wrong, joined into one: the installer's error lines (npm's
/// `npm error`, pip's `ERROR:`) without boilerplate, else its last lines.
fn error_lines(tool: &str, lines: &[String]) -> String {
    let boilerplate = [
        "A complete log of this run can be found in",
        "Note that you can also install from a",
        "tarball, folder, http url, or git url",
        "Log files were not written due to",
        "You can rerun the command with",
    ];
    let errors: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| match tool {
            "npm" => l.starts_with("npm error") || l.starts_with("npm ERR!"),
            "pip" => l.starts_with("ERROR:") || l.starts_with("error:"),
            _ => false,
        })
        .map(|l| {
            let l = l.trim_start_matches("npm error").trim_start_matches("npm ERR!").trim();
            // npm repeats the status code as a prefix of every line: `404  'x' is not in this registry.`
            l.strip_prefix("404 ")
                .map(str::trim)
                .filter(|rest| !rest.is_empty())
                .unwrap_or(l)
        })
        .filter(|l| !l.is_empty() && l != &"404" && !boilerplate.iter().any(|b| l.contains(b)))
        .collect();
    let chosen: Vec<&str> = if errors.is_empty() {
        lines.iter().map(String::as_str).collect()
    } else {
        errors
    };
    let mut unique: Vec<&str> = Vec::new();
    for l in chosen.iter().rev() {
        if !unique.contains(l) {
            unique.push(l);
        }
        if unique.len() == ERROR_LINES {
            break;
        }
    }
    unique.reverse();
    if unique.is_empty() {
        return "no output".into();
    }
    unique
        .iter()
        .map(|l| {
            if l.chars().count() > ERROR_LINE_CHARS {
                format!("{}…", l.chars().take(ERROR_LINE_CHARS).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_fingerprints_follow_the_programs_found() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = fingerprint(Ecosystem::Npm, &names(&["npm", "node"]));
        assert_eq!(a, fingerprint(Ecosystem::Npm, &names(&["npm", "node"])));
        assert_ne!(a, fingerprint(Ecosystem::Pip, &names(&["npm", "node"])));
        assert_ne!(
            a,
            fingerprint(Ecosystem::Npm, &names(&["npm", "node", "fnbuild-no-such-program"]))
        );
    }

    fn write_exe(path: &Path, content: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const PIP_SCRIPT: &str =
        "# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom pip._internal.cli.main import main\n";

    #[test]
    fn pip_version_is_read_from_pips_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        write_exe(&base.join("bin/python3.12"), "");
        let init = "__version__ = \"24.0\"\n\ndef main(): pass\n";
        std::fs::create_dir_all(base.join("lib/python3.12/site-packages/pip")).unwrap();
        std::fs::write(base.join("lib/python3.12/site-packages/pip/__init__.py"), init).unwrap();
        let pip = base.join("bin/pip3");
        write_exe(
            &pip,
            &format!("#!{}\n{PIP_SCRIPT}", base.join("bin/python3.12").display()),
        );
        assert_eq!(pip_version_from_files(&pip), Some(("24.0".into(), "3.12".into())));

        // A virtualenv: its python links to the base one, its pip is its own.
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::os::unix::fs::symlink(base.join("bin/python3.12"), venv.join("bin/python")).unwrap();
        std::fs::create_dir_all(venv.join("lib/python3.12/site-packages/pip")).unwrap();
        std::fs::write(
            venv.join("lib/python3.12/site-packages/pip/__init__.py"),
            "__version__ = '23.3.1'\n",
        )
        .unwrap();
        let vpip = venv.join("bin/pip");
        write_exe(&vpip, &format!("#!{}\n{PIP_SCRIPT}", venv.join("bin/python").display()));
        assert_eq!(pip_version_from_files(&vpip), Some(("23.3.1".into(), "3.12".into())));

        // Anything else is asked: a wrapper script, `#!/usr/bin/env`, pip elsewhere.
        let other = dir.path().join("other");
        write_exe(&other, "#!/bin/sh\nexec python3 -m pip \"$@\"\n");
        assert_eq!(pip_version_from_files(&other), None);
        write_exe(&other, &format!("#!/usr/bin/env python3\n{PIP_SCRIPT}"));
        assert_eq!(pip_version_from_files(&other), None);
        std::fs::remove_dir_all(venv.join("lib")).unwrap();
        assert_eq!(pip_version_from_files(&vpip), None);
    }

    #[test]
    fn pyenv_shims_resolve_to_the_selected_versions_pip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        write_exe(
            &root.join("shims/pip3"),
            "#!/usr/bin/env bash\nexec pyenv exec \"$0\" \"$@\"\n",
        );
        write_exe(&root.join("versions/3.12.9/bin/pip3"), "");
        let pyenv = |versions: &[&str]| Pyenv {
            root: root.clone(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
        };
        let shim = root.join("shims/pip3");
        assert_eq!(
            pyenv(&["3.11.0", "3.12.9"]).resolve_shim(&shim, "pip3"),
            Some(Some(root.join("versions/3.12.9/bin/pip3")))
        );
        assert_eq!(pyenv(&["3.11.0"]).resolve_shim(&shim, "pip3"), Some(None));
        assert_eq!(
            pyenv(&["3.12.9"]).resolve_shim(&root.join("versions/3.12.9/bin/pip3"), "pip3"),
            None
        );
    }

    /// On this machine's real pips, what the files say is what `pip --version` says.
    #[test]
    fn pip_version_from_files_agrees_with_pip_version() {
        let mut pips: Vec<PathBuf> = ["pip3", "pip"].iter().filter_map(|n| which(n)).collect();
        if let Some(p) = Pyenv::from_env() {
            pips.extend(
                ["pip3", "pip"]
                    .iter()
                    .filter_map(|n| which(n).and_then(|f| p.resolve_shim(&f, n)).flatten()),
            );
            for v in std::fs::read_dir(p.root.join("versions"))
                .into_iter()
                .flatten()
                .flatten()
            {
                pips.push(v.path().join("bin/pip3"));
            }
        }
        let mut compared = 0;
        for pip in &pips {
            let Some(from_files) = pip_version_from_files(pip) else {
                continue;
            };
            let out = std::process::Command::new(pip).arg("--version").output().unwrap();
            let said = parse_pip_version(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(Some(from_files), said, "{}", pip.display());
            compared += 1;
        }
        // pyenv installs pip in the layout read from files: there, the fast path must be taken.
        if Pyenv::from_env().is_some_and(|p| p.root.join("versions").is_dir()) {
            assert!(compared > 0, "no pip read from its files among {pips:?}");
        }
    }

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

    #[test]
    fn pip_versions_parse() {
        assert_eq!(
            parse_pip_version(
                "pip 23.2.1 from /root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip (python 3.11)\n"
            ),
            Some(("23.2.1".into(), "3.11".into()))
        );
        assert_eq!(parse_pip_version("something else"), None);
    }

    #[test]
    fn cross_pip_takes_manylinux_wheels_up_to_the_base_glibc() {
        let runtime = crate::function::runtime::Runtimes::Embedded.load("python312").unwrap();
        let target = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let installer = Installer {
            ecosystem: Ecosystem::Pip,
            program: "pip".into(),
            identity: "pip 1 python 3.11".into(),
            python: Some("3.11".into()),
        };
        let PipMode::Cross {
            python_version,
            platforms,
        } = pip_mode(&installer, &runtime, &target)
        else {
            panic!("not cross")
        };
        assert_eq!(python_version, "3.12");
        assert_eq!(platforms.first().unwrap(), "manylinux_2_36_x86_64");
        assert_eq!(platforms.last().unwrap(), "manylinux2014_x86_64");
        assert_eq!(platforms.len(), 20);
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        let native = Installer {
            python: Some("3.12".into()),
            ..installer
        };
        assert!(
            matches!(pip_mode(&native, &runtime, &arm), PipMode::Cross { .. }),
            "another machine type is always cross"
        );
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(pip_mode(&native, &runtime, &target), PipMode::Native);
        }
    }

    #[test]
    fn failures_keep_the_lines_that_matter() {
        let npm: Vec<String> = [
            "npm error code E404",
            "npm error 404 Not Found - GET https://registry.npmjs.org/is-numbr - Not found",
            "npm error 404",
            "npm error 404  'is-numbr@7.0.0' is not in this registry.",
            "npm error 404",
            "npm error 404 Note that you can also install from a",
            "npm error 404 tarball, folder, http url, or git url.",
            "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            error_lines("npm", &npm),
            "code E404 | Not Found - GET https://registry.npmjs.org/is-numbr - Not found | 'is-numbr@7.0.0' is not in this registry."
        );
        let pip: Vec<String> = [
            "Collecting sixx==1.0",
            "ERROR: Could not find a version that satisfies the requirement sixx==1.0 (from versions: none)",
            "ERROR: No matching distribution found for sixx==1.0",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            error_lines("pip", &pip),
            "ERROR: Could not find a version that satisfies the requirement sixx==1.0 (from versions: none) | ERROR: No matching distribution found for sixx==1.0"
        );
        assert_eq!(error_lines("pip", &["a".into(), "b".into()]), "a | b");
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m\r"), "red");
    }
}
