//! The remembered probe: asking `pip --version` costs most of a second, so a probe's answer
//! is kept, keyed by a fingerprint of everything that decides it.

use super::{probe, tool, which, Installer};
use crate::function::dependencies::plan::Ecosystem;
use crate::function::dependencies::DependencyError;
use crate::function::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
            fingerprint(ecosystem, &tool(ecosystem).candidates(runtime))
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
}
