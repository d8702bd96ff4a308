//! Handing credentials to git and ssh without a command line: this binary is their askpass
//! program (`GIT_ASKPASS`, `SSH_ASKPASS`). Called with a prompt and `FNBUILD_GIT_ASKPASS` naming
//! a private directory, it prints the answer from it (`username`, `password`, `passphrase`) and
//! nothing else; [`answer_if_asked`] runs before fnbuild parses its arguments.

use super::{Auth, HostKeys};
use anyhow::{Context, Result};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable that says "answer the prompt from this directory".
const ENV: &str = "FNBUILD_GIT_ASKPASS";

/// When this process is git's or ssh's askpass: the answer printed, and the exit code.
pub fn answer_if_asked() -> Option<std::process::ExitCode> {
    let dir = std::env::var_os(ENV)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [prompt] = args.as_slice() else { return None };
    let lower = prompt.to_ascii_lowercase();
    let file = if lower.starts_with("username") {
        "username"
    } else if lower.contains("passphrase") {
        "passphrase"
    } else if lower.starts_with("password") {
        "password"
    } else {
        // A question we do not answer (a host key to accept, ...): no.
        return Some(std::process::ExitCode::from(1));
    };
    match std::fs::read_to_string(Path::new(&dir).join(file)) {
        Ok(answer) => {
            println!("{answer}");
            Some(std::process::ExitCode::SUCCESS)
        }
        Err(_) => Some(std::process::ExitCode::from(1)),
    }
}

/// The environment a git command runs in: askpass, and ssh's key and host-key settings. Its
/// private directory is removed when it is dropped.
pub struct Env {
    dir: PathBuf,
    vars: Vec<(String, String)>,
}

fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content)?;
    Ok(())
}

/// `s` as one shell word (GIT_SSH_COMMAND is run by a shell).
fn quoted(s: &Path) -> String {
    format!("'{}'", s.display().to_string().replace('\'', r"'\''"))
}

impl Env {
    pub fn prepare(dir: &Path, auth: Option<&Auth>, host_keys: &HostKeys) -> Result<Env> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let exe = std::env::current_exe().context("cannot find fnbuild's own executable (for git's askpass)")?;
        let exe = exe.display().to_string();
        let mut vars = vec![
            (ENV.to_string(), dir.display().to_string()),
            ("GIT_ASKPASS".to_string(), exe.clone()),
        ];
        // Without a key of the request's, ssh does as the user's ssh does (agent, config).
        let mut ssh = vec!["ssh".to_string()];
        match auth {
            Some(Auth::Basic { username, password }) => {
                crate::secrets::register(password);
                write_private(&dir.join("username"), username.as_bytes())?;
                write_private(&dir.join("password"), password.as_bytes())?;
            }
            Some(Auth::Key { key, passphrase }) => {
                if let Ok(k) = std::str::from_utf8(key) {
                    for line in k
                        .lines()
                        .filter(|l| l.len() >= crate::secrets::MIN_SECRET_LEN && !l.starts_with("-----"))
                    {
                        crate::secrets::register(line.trim());
                    }
                }
                let mut key = key.clone();
                if !key.ends_with(b"\n") {
                    key.push(b'\n'); // OpenSSH refuses a key without its last newline
                }
                let key_file = dir.join("key");
                write_private(&key_file, &key)?;
                ssh.extend(["-o".into(), "IdentitiesOnly=yes".into(), "-i".into(), quoted(&key_file)]);
                if let Some(p) = passphrase {
                    crate::secrets::register(p);
                    write_private(&dir.join("passphrase"), p.as_bytes())?;
                    vars.push(("SSH_ASKPASS".into(), exe.clone()));
                    vars.push(("SSH_ASKPASS_REQUIRE".into(), "force".into()));
                    // Older OpenSSH asks SSH_ASKPASS only without a terminal and with DISPLAY set.
                    vars.push(("DISPLAY".into(), ":0".into()));
                } else {
                    ssh.extend(["-o".into(), "BatchMode=yes".into()]);
                }
            }
            // Never a prompt on a terminal: a build does not wait for a person.
            None => ssh.extend(["-o".into(), "BatchMode=yes".into()]),
        }
        match host_keys {
            HostKeys::Known(Some(file)) => ssh.extend([
                "-o".into(),
                "StrictHostKeyChecking=yes".into(),
                "-o".into(),
                format!("UserKnownHostsFile={}", quoted(file)),
                "-o".into(),
                "GlobalKnownHostsFile=/dev/null".into(),
            ]),
            HostKeys::Known(None) => ssh.extend(["-o".into(), "StrictHostKeyChecking=yes".into()]),
            HostKeys::Any => ssh.extend([
                "-o".into(),
                "StrictHostKeyChecking=no".into(),
                "-o".into(),
                "UserKnownHostsFile=/dev/null".into(),
                "-o".into(),
                "LogLevel=ERROR".into(),
            ]),
        }
        vars.push(("GIT_SSH_COMMAND".into(), ssh.join(" ")));
        Ok(Env {
            dir: dir.to_path_buf(),
            vars,
        })
    }

    pub fn apply(&self, c: &mut Command) {
        for (k, v) in &self.vars {
            c.env(k, v);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
