//! Git servers for the tests, on 127.0.0.1: repositories made with the `git` binary, `git
//! daemon` (git://) and OpenSSH's `sshd` with keys made here (ssh://).

use super::{free_port, run_ok};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `git -C DIR ARGS...` with a fixed identity and `main` as the default branch; its stdout,
/// trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args),
    )
    .trim()
    .to_string()
}

/// A bare repository `ROOT/fn.git` and a work tree `ROOT/work` whose `git push origin main`
/// goes there.
pub fn git_bare_and_work(root: &Path) -> (PathBuf, PathBuf) {
    let (bare, work) = (root.join("fn.git"), root.join("work"));
    git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    (bare, work)
}

/// `git daemon` serving every repository under `root` on 127.0.0.1 (git://), stopped on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon does not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        GitDaemon { child, port }
    }

    /// `git://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's sshd on 127.0.0.1, as this machine's user, with a host key and two authorized keys
/// (one with a passphrase) made here.
pub struct Sshd {
    child: Child,
    /// `ssh://USER@127.0.0.1:PORT<root>/fn.git`.
    pub url: String,
    /// The keys: `host`, `client`, `client-pass` (with [`KEY_PASSPHRASE`]), `stranger` (not
    /// authorized), and `known_hosts` (the host key) and `empty_known_hosts`.
    pub dir: PathBuf,
}

pub const KEY_PASSPHRASE: &str = "key-passphrase-7d2q";

pub fn keygen(path: &Path, passphrase: &str) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f"])
            .arg(path),
    );
}

pub fn sshd(root: &Path) -> Sshd {
    let dir = root.join("ssh");
    std::fs::create_dir_all(&dir).unwrap();
    keygen(&dir.join("host"), "");
    keygen(&dir.join("client"), "");
    keygen(&dir.join("client-pass"), KEY_PASSPHRASE);
    keygen(&dir.join("stranger"), "");
    let authorized = [
        std::fs::read_to_string(dir.join("client.pub")).unwrap(),
        std::fs::read_to_string(dir.join("client-pass.pub")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
    let port = free_port();
    let host_pub = std::fs::read_to_string(dir.join("host.pub")).unwrap();
    std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    std::fs::write(dir.join("empty_known_hosts"), "").unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {ak}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nPermitRootLogin prohibit-password\n\
             LogLevel ERROR\n",
            host = dir.join("host").display(),
            ak = dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    // sshd wants its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd (openssh-server)");
    wait_listening(port);
    let user = run_ok(Command::new("id").arg("-un")).trim().to_string();
    Sshd {
        child,
        url: format!("ssh://{user}@127.0.0.1:{port}{}/fn.git", root.display()),
        dir,
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// GitHub's push event for `repo_url` (the fields a receiver reads), and its
/// `X-Hub-Signature-256` with `secret`: (body, header value).
pub fn github_push_event(repo_url: &str, secret: &[u8]) -> (String, String) {
    use hmac::Mac;
    let body = serde_json::json!({"ref": "refs/heads/main", "repository": {"clone_url": repo_url}}).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}
