//! Running the ecosystem's own installer (the host's `npm` or `pip`) in a staging directory,
//! its output going to the log line by line as it comes, and its last lines into the error
//! when it fails. Credentials files are handed over by environment variable only.
//!
//! npm and pip are behind one interface, [`Tool`]: each of `npm.rs` and `pip.rs` answers the
//! questions in which they differ (the programs a probe tries and what it asks them, how the
//! installer picks distributions for the image's platform, the commands for a function's
//! packages and for the runtime libraries), and callers ask the [`Installer`] it found. This
//! module holds what they share: the installer's identity (remembered by `memo.rs`), staging,
//! running a command in its sandbox, and the lines of its output an error keeps.

mod memo;
mod npm;
mod pip;

pub use memo::probe_cached;
pub use pip::PipMode;

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
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
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

impl Installer {
    /// How it picks distributions for `runtime` on `target`, when that is its own choice
    /// (pip's [`PipMode`]; npm: none). Part of the cache key, and of the install's `Job`.
    pub fn mode(&self, runtime: &Runtime, target: &Platform) -> Option<PipMode> {
        tool(self.ecosystem).mode(self, runtime, target)
    }

    /// The commands that install `job`, in order, and the directory the packages land in.
    pub(super) fn invocations(&self, job: &Job) -> (Vec<Invocation>, PathBuf) {
        tool(self.ecosystem).invocations(self, job)
    }

    /// The command that installs the runtime libraries' lock files staged in `staged`, and the
    /// directory it fills. Scripts never run (the libraries need none), so only the lock files'
    /// packages, checked against their hashes, reach the layer.
    pub(super) fn library_invocation(
        &self,
        runtime: &Runtime,
        staged: &Path,
        npmrc: Option<&Path>,
        pip_conf: Option<&Path>,
    ) -> (Invocation, PathBuf) {
        tool(self.ecosystem).library_invocation(self, runtime, staged, npmrc, pip_conf)
    }
}

/// What an installer module (`npm.rs`, `pip.rs`) answers: everything in which npm and pip
/// differ, so that the rest of the dependency code never asks which one it has.
trait Tool: Sync {
    /// The program names a probe tries, in order (a remembered probe holds while they are
    /// unchanged).
    fn candidates(&self, runtime: &Runtime) -> Vec<String>;
    /// Finds the installer on PATH and asks it for its version: its [`Installer`].
    fn probe<'a>(&'a self, runtime: &'a Runtime) -> Probe<'a>;
    /// See [`Installer::mode`].
    fn mode(&self, installer: &Installer, runtime: &Runtime, target: &Platform) -> Option<PipMode>;
    /// See [`Installer::invocations`].
    fn invocations(&self, installer: &Installer, job: &Job) -> (Vec<Invocation>, PathBuf);
    /// See [`Installer::library_invocation`].
    fn library_invocation(
        &self,
        installer: &Installer,
        runtime: &Runtime,
        staged: &Path,
        npmrc: Option<&Path>,
        pip_conf: Option<&Path>,
    ) -> (Invocation, PathBuf);
}

/// A probe under way.
type Probe<'a> = Pin<Box<dyn Future<Output = Result<Installer, DependencyError>> + Send + 'a>>;

/// The module that speaks for `ecosystem`.
fn tool(ecosystem: Ecosystem) -> &'static dyn Tool {
    match ecosystem {
        Ecosystem::Npm => &npm::Npm,
        Ecosystem::Pip => &pip::Pip,
    }
}

/// Finds the installer on PATH and asks it (and npm's Node.js) for its version.
pub async fn probe(ecosystem: Ecosystem, runtime: &Runtime) -> Result<Installer, DependencyError> {
    tool(ecosystem).probe(runtime).await
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
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

/// A function's dependencies to install, as the installer is told them.
pub struct Job<'a> {
    pub plan: &'a Plan,
    /// The staged inputs ([`stage`]): the installer's working directory. npm installs into
    /// its `node_modules`.
    pub staged: &'a Path,
    /// Where an installer that is told installs (pip's `--target`); beside it, what it keeps
    /// between its commands (pip's downloaded wheels).
    pub target: &'a Path,
    /// What [`Installer::mode`] said (the cache key has it).
    pub mode: Option<&'a PipMode>,
    /// The image's platform (npm takes the optional native packages for it).
    pub platform: &'a Platform,
    /// `--npmrc`, `--pip-conf`: for the commands that download.
    pub npmrc: Option<&'a Path>,
    pub pip_conf: Option<&'a Path>,
    /// The build's timestamp (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
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
    /// Set on a command that only runs install scripts (`npm rebuild`): whether there are any,
    /// asked of its working directory just before it would run. It is skipped when there are
    /// none, and gets no proxy settings (the packages are downloaded by then).
    pub scripts: Option<fn(&Path) -> bool>,
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
