//! pip: finding it (the runtime's `pipX.Y` first, through pyenv's shims) and its version and
//! its Python's, how it picks distributions for the image's platform ([`PipMode`]), and its
//! commands: for a function's requirements (with a pip.conf, a download of wheels with the
//! credentials, then an install without them or an index); for the runtime libraries,
//! pure-Python wheels for the runtime's Python.

use super::{first_line, version_of, which, which_in, Installer, Invocation, Job, Probe, Tool};
use crate::function::dependencies::plan::{Ecosystem, Plan};
use crate::function::dependencies::DependencyError;
use crate::function::fs::is_program;
use crate::function::runtime::Runtime;
use crate::oci::platform::Platform;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// pip behind the installer interface.
pub(super) struct Pip;

impl Tool for Pip {
    /// pip for the runtime's Python first, then the usual names.
    fn candidates(&self, runtime: &Runtime) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(v) = &runtime.spec.python_version {
            names.push(format!("pip{v}"));
        }
        names.extend(["pip3".to_string(), "pip".to_string()]);
        names
    }

    fn probe<'a>(&'a self, runtime: &'a Runtime) -> Probe<'a> {
        Box::pin(probe(self.candidates(runtime), runtime))
    }

    fn mode(&self, installer: &Installer, runtime: &Runtime, target: &Platform) -> Option<PipMode> {
        Some(pip_mode(installer, runtime, target))
    }

    fn invocations(&self, installer: &Installer, job: &Job) -> (Vec<Invocation>, PathBuf) {
        let mode = job
            .mode
            .expect("pip's mode is decided with the cache key, before any install");
        let invocations = invocations(
            installer,
            job.plan,
            job.staged,
            job.target,
            mode,
            job.pip_conf,
            job.epoch,
        );
        (invocations, job.target.to_path_buf())
    }

    /// Pure-Python wheels only, checked against the lock file's hashes and chosen for the
    /// runtime's Python: the same files whatever Python and machine make them.
    fn library_invocation(
        &self,
        installer: &Installer,
        runtime: &Runtime,
        staged: &Path,
        _npmrc: Option<&Path>,
        pip_conf: Option<&Path>,
    ) -> (Invocation, PathBuf) {
        let strs = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let target = staged.join("target");
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into()),
            ("PIP_ROOT_USER_ACTION".into(), "ignore".into()),
        ];
        if let Some(conf) = pip_conf {
            env.push(("PIP_CONFIG_FILE".into(), conf.into()));
        }
        let mut args = strs(&[
            "install",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-compile",
            "--no-warn-script-location",
            "--quiet",
            "--implementation",
            "py",
            "--abi",
            "none",
            "--platform",
            "any",
            "--python-version",
        ]);
        args.push(runtime.spec.python_version.clone().unwrap_or_else(|| "3".into()).into());
        args.extend(strs(&["--target"]));
        args.push(target.clone().into());
        args.extend(strs(&["-r", "requirements.txt"]));
        let inv = Invocation {
            program: installer.program.clone(),
            args,
            env,
            cwd: staged.into(),
            label: "pip install (runtime libraries)".into(),
            hint: None,
            credentials: true,
            scripts: None,
        };
        (inv, target)
    }
}

/// Finds the first of `names` on PATH that answers for its version (and its Python's).
/// pyenv-style shims that do not work for this directory fail `--version` and are skipped.
async fn probe(names: Vec<String>, runtime: &Runtime) -> Result<Installer, DependencyError> {
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
                ecosystem: Ecosystem::Pip,
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
                    ecosystem: Ecosystem::Pip,
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

/// `pip 23.2.1 from /x/site-packages/pip (python 3.11)` → (`23.2.1`, `3.11`).
fn parse_pip_version(out: &str) -> Option<(String, String)> {
    let line = first_line(out);
    let version = line.strip_prefix("pip ")?.split_whitespace().next()?.to_string();
    let python = line.rsplit_once("(python ")?.1.trim_end_matches(')').trim().to_string();
    Some((version, python))
}

/// How pip should pick distributions for `runtime` on `target`.
fn pip_mode(installer: &Installer, runtime: &Runtime, target: &Platform) -> PipMode {
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

/// The pip commands for `plan`, run in `staged`, installing into `target`. With a pip.conf
/// (credentials), the packages are first downloaded as wheels only (installing a wheel runs no
/// code; building a source distribution would run the package's code with the credentials in
/// reach), then installed from those files without the credentials and without an index.
#[allow(clippy::too_many_arguments)]
fn invocations(
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
            scripts: None,
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
            scripts: None,
        },
        Invocation {
            program: installer.program.clone(),
            args: install_args(&["--no-index".into(), "--find-links".into(), wheels.into()]),
            env: offline_env,
            cwd: staged.into(),
            label: "pip install".into(),
            hint,
            credentials: false,
            scripts: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
