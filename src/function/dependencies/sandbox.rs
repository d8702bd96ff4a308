//! What an installer (and the install scripts it runs, which are the function author's code)
//! may see: an environment built from an allow-list, a fresh home and temp directory, and a
//! view of the filesystem in which the build's credential files are empty.
//!
//! The files are hidden in a private mount namespace of the child (as root, or through a user
//! namespace otherwise): a tmpfs over each hidden directory, `/dev/null` over each hidden file.
//! Where the kernel refuses namespaces (an unprivileged container), the child runs without
//! them, with a warning; the layer scan still keeps every credential out of the image, and a
//! build Job never mounts the registry Secret in the container that installs.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables an installer may inherit: the program search path, locale, time zone, CA bundles.
const INHERITED: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
];
/// Proxies, for the phase that downloads (their user info is registered as a secret).
const PROXIES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The confinement of one installer run.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Files and directories that must look empty to the installer.
    pub hide: Vec<PathBuf>,
    /// The fresh `HOME` (and `TMPDIR` below it) the installer gets.
    pub home: PathBuf,
    /// Whether the proxies are passed on (the downloading phase only).
    pub network_env: bool,
}

impl Sandbox {
    /// Prepares `command`: cleared environment plus the allow-list, `env` (the installer's own
    /// settings), and the hidden paths. Returns whether the paths will be hidden.
    pub fn apply(&self, command: &mut Command, env: &[(OsString, OsString)], isolate: bool) -> std::io::Result<()> {
        let tmp = self.home.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        command.env_clear();
        for name in INHERITED.iter().chain(if self.network_env { PROXIES } else { &[] }) {
            if let Some(v) = std::env::var_os(name) {
                command.env(name, v);
            }
        }
        command
            .env("HOME", &self.home)
            .env("TMPDIR", &tmp)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"));
        command.envs(env.iter().map(|(k, v)| (k, v)));
        if isolate {
            // A hidden directory that holds the installer's own home would hide its work too.
            let hide: Vec<PathBuf> = self
                .hide
                .iter()
                .filter(|p| !self.home.starts_with(p))
                .cloned()
                .collect();
            let plan = MountPlan::new(&hide);
            if !plan.targets.is_empty() {
                // SAFETY: the closure runs in the forked child before exec and only makes
                // system calls with memory prepared before the fork (no allocation).
                unsafe {
                    command.pre_exec(move || plan.enter());
                }
            }
        }
        Ok(())
    }

    /// The paths that exist now (only those can be, or need to be, hidden).
    pub fn existing(&self) -> Vec<&Path> {
        self.hide.iter().map(PathBuf::as_path).filter(|p| p.exists()).collect()
    }
}

/// Everything the child needs to hide the paths, made before the fork.
struct MountPlan {
    targets: Vec<(CString, bool)>,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    root: bool,
}

const TMPFS: &[u8] = b"tmpfs\0";
const DEV_NULL: &[u8] = b"/dev/null\0";
const SLASH: &[u8] = b"/\0";
const TMPFS_OPTIONS: &[u8] = b"size=4k,mode=000\0";

impl MountPlan {
    fn new(hide: &[PathBuf]) -> MountPlan {
        let mut targets = Vec::new();
        for p in hide {
            let Ok(real) = std::fs::canonicalize(p) else { continue };
            let Ok(meta) = std::fs::metadata(&real) else { continue };
            if let Ok(c) = CString::new(real.as_os_str().as_bytes()) {
                targets.push((c, meta.is_dir()));
            }
        }
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MountPlan {
            targets,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            root: uid == 0,
        }
    }

    /// In the child: a private mount namespace with the targets covered.
    fn enter(&self) -> std::io::Result<()> {
        use std::io::Error;
        // SAFETY: plain system calls on NUL-terminated buffers owned by self.
        unsafe {
            let flags = if self.root {
                libc::CLONE_NEWNS
            } else {
                libc::CLONE_NEWNS | libc::CLONE_NEWUSER
            };
            if libc::unshare(flags) != 0 {
                return Err(Error::last_os_error());
            }
            if !self.root {
                write_proc(b"/proc/self/setgroups\0", b"deny")?;
                write_proc(b"/proc/self/uid_map\0", &self.uid_map)?;
                write_proc(b"/proc/self/gid_map\0", &self.gid_map)?;
            }
            if libc::mount(
                std::ptr::null(),
                SLASH.as_ptr().cast(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(Error::last_os_error());
            }
            for (target, is_dir) in &self.targets {
                let rc = if *is_dir {
                    libc::mount(
                        TMPFS.as_ptr().cast(),
                        target.as_ptr(),
                        TMPFS.as_ptr().cast(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        TMPFS_OPTIONS.as_ptr().cast(),
                    )
                } else {
                    libc::mount(
                        DEV_NULL.as_ptr().cast(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                if rc != 0 {
                    return Err(Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// # Safety
/// `path` must be NUL-terminated.
unsafe fn write_proc(path: &[u8], content: &[u8]) -> std::io::Result<()> {
    let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = libc::write(fd, content.as_ptr().cast(), content.len());
    libc::close(fd);
    if n != content.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps other processes of this user (an install script among them) from reading this
/// process's memory and environment through /proc.
pub fn protect_this_process() {
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_an_allow_list_and_hidden_files_read_empty() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("config.json");
        std::fs::write(&secret_file, "TOP-SECRET-VALUE").unwrap();
        let secret_dir = dir.path().join("docker");
        std::fs::create_dir(&secret_dir).unwrap();
        std::fs::write(secret_dir.join("x"), "TOP-SECRET-VALUE").unwrap();
        std::env::set_var("FNBUILD_TEST_SANDBOX_TOKEN", "TOP-SECRET-VALUE");
        let sandbox = Sandbox {
            hide: vec![secret_file.clone(), secret_dir.clone(), dir.path().join("absent")],
            home: dir.path().join("home"),
            network_env: false,
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "env; cat {} {}/x 2>&1; echo HOME=$HOME",
            secret_file.display(),
            secret_dir.display()
        ));
        sandbox.apply(&mut cmd, &[("EXTRA".into(), "1".into())], true).unwrap();
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("TOP-SECRET-VALUE"), "{text}");
        assert!(text.contains("EXTRA=1") && text.contains("PATH="), "{text}");
        assert!(
            text.contains(&format!("HOME={}", dir.path().join("home").display())),
            "{text}"
        );
        // Outside the sandbox the file is still there.
        assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), "TOP-SECRET-VALUE");
    }
}
