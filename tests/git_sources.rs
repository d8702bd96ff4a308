//! `fnbuild build --git-url`: builds from repositories on real git servers this test starts on
//! 127.0.0.1: `git daemon` (git://) and Debian's `git http-backend` behind a small HTTP server
//! that asks for Basic auth (smart HTTP, as a Git host serves it). The image's labels name the
//! commit; the checkout's `.git` never reaches a layer; bad input gets one line naming the
//! repository, never a secret, and nothing is written.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const USER: &str = "fnbuild-bot";
const PASSWORD: &str = "git-pa55word-9f3k";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn handler(version: &str) -> String {
    format!("module.exports = {{ main: function () {{ return require('./greeting.js') + ' {version}'; }} }};\n")
}

/// The repository: `fn/` holds the function (v1 tagged, then v2 on main); a `feature` branch;
/// an in-tree symlink; `escape/` holds a function whose link leaves its directory.
struct Repo {
    dir: tempfile::TempDir,
    v1: String,
    v2: String,
}

fn repo() -> Repo {
    let dir = temp_dir("git-repos-");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    write(&work.join("fn/handler.js"), &handler("v1"));
    write(
        &work.join("fn/package.json"),
        "{\"name\":\"hello\",\"version\":\"1.0.0\",\"dependencies\":{}}\n",
    );
    write(&work.join("shared/greeting.txt"), "hello");
    write(&work.join("fn/greeting-text.js"), "module.exports = 'hello';\n");
    std::os::unix::fs::symlink("greeting-text.js", work.join("fn/greeting.js")).unwrap();
    write(&work.join("escape/handler.js"), &handler("x"));
    std::os::unix::fs::symlink("../shared/greeting.txt", work.join("escape/greeting.js")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "v1"]);
    let v1 = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["branch", "feature"]);
    write(&work.join("fn/handler.js"), &handler("v2"));
    git(&work, &["commit", "-q", "-am", "v2"]);
    let v2 = git(&work, &["rev-parse", "HEAD"]);
    let bare = dir.path().join("fn.git");
    run_ok(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&work)
            .arg(&bare),
    );
    Repo { dir, v1, v2 }
}

fn git_daemon(root: &Path) -> (GitDaemon, String) {
    let d = GitDaemon::start(root);
    let url = d.url("fn.git");
    (d, url)
}

/// `git http-backend` (CGI) behind Python's HTTP server, Basic auth required.
fn git_http(root: &Path) -> (Server, String) {
    let port = free_port();
    let script = root.join("serve.py");
    std::fs::write(
        &script,
        format!(
            r#"import base64, http.server, os, subprocess, sys
ROOT, PORT, AUTH = sys.argv[1], int(sys.argv[2]), "Basic " + base64.b64encode(b"{USER}:{PASSWORD}").decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def handle_one(self):
        if self.headers.get("Authorization") != AUTH:
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0"); self.end_headers(); return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = dict(os.environ, GIT_PROJECT_ROOT=ROOT, GIT_HTTP_EXPORT_ALL="1", PATH_INFO=path, QUERY_STRING=query,
                   REQUEST_METHOD=self.command, CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER="{USER}", GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(": ")
            if k.lower() == "status": status = int(v.split()[0])
            elif k: headers.append((k, v))
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest))); self.end_headers(); self.wfile.write(rest)
    do_GET = do_POST = handle_one
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#
        ),
    )
    .unwrap();
    let child = Command::new("python3")
        .arg(&script)
        .arg(root)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    wait_listening(port);
    (Server(child), format!("http://127.0.0.1:{port}/fn.git"))
}

fn wait_listening(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

fn node_base() -> String {
    format!("oci:{}:20", base_images().node.display())
}

fn build(args: &[&str], out: &Path) -> std::process::Output {
    fnbuild()
        .arg("build")
        .args(["--runtime", "nodejs20", "--base", &node_base(), "--json"])
        .arg("--output")
        .arg(format!("oci:{}:latest", out.display()))
        .args(args)
        .output()
        .unwrap()
}

fn build_ok(args: &[&str], out: &Path) -> Value {
    let o = build(args, out);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The single error line of a build that must fail, which must not have written the layout.
fn build_err(args: &[&str]) -> String {
    let out = temp_dir("git-out-");
    let layout = out.path().join("layout");
    let o = build(args, &layout);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} must fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password in: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!layout.join("index.json").exists(), "nothing is written");
    errors[0].to_string()
}

fn labels(layout: &Path) -> Value {
    skopeo_inspect_config(&format!("oci:{}:latest", layout.display()))["config"]["Labels"].clone()
}

/// Every path in the image's layers.
fn files(layout: &Path) -> Vec<String> {
    let unpacked = umoci_unpack(layout, "latest");
    let rootfs = unpacked.path().join("rootfs");
    let mut out = Vec::new();
    let mut stack = vec![rootfs.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(&rootfs).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn builds_from_git_daemon_a_branch_a_tag_and_a_commit() {
    let r = repo();
    let (_server, url) = git_daemon(r.dir.path());
    let out = temp_dir("git-out-");
    for (reference, want) in [
        (None, &r.v2),
        (Some("v1"), &r.v1),
        (Some("feature"), &r.v1),
        (Some(r.v1.as_str()), &r.v1),
    ] {
        let layout: PathBuf = out.path().join(format!("l-{}", reference.unwrap_or("head")));
        let mut args = vec!["--git-url", url.as_str(), "--git-dir", "fn"];
        if let Some(reference) = reference {
            args.extend(["--git-ref", reference]);
        }
        build_ok(&args, &layout);
        let l = labels(&layout);
        assert_eq!(l["org.opencontainers.image.revision"], want.as_str(), "{reference:?}");
        assert_eq!(l["org.opencontainers.image.source"], url.as_str());
    }
    // Reproducible: the same commit gives the same digest; the checkout's .git is not in it.
    let a = build_ok(
        &["--git-url", &url, "--git-dir", "fn", "--git-ref", "v1"],
        &out.path().join("a"),
    );
    let b = build_ok(
        &["--git-url", &url, "--git-dir", "./fn/", "--git-ref", &r.v1],
        &out.path().join("b"),
    );
    assert_eq!(a["digest"], b["digest"]);
    let all = files(&out.path().join("a"));
    assert!(all.iter().any(|f| f.ends_with("handler.js")), "{all:?}");
    assert!(
        all.iter().any(|f| f.ends_with("greeting.js")),
        "the in-tree symlink is kept: {all:?}"
    );
    assert!(
        !all.iter().any(|f| f.contains(".git/") || f.ends_with(".git")),
        "{all:?}"
    );
}

#[test]
fn bad_input_is_one_line_naming_the_repository() {
    let r = repo();
    let (_server, url) = git_daemon(r.dir.path());
    let e = build_err(&["--git-url", &url, "--git-ref", "nope", "--git-dir", "fn"]);
    assert!(e.contains(&url) && e.contains("reference nope not found"), "{e}");
    let e = build_err(&["--git-url", &url, "--git-dir", "missing"]);
    assert!(e.contains("--git-dir missing: no such directory"), "{e}");
    let e = build_err(&["--git-url", &url, "--git-dir", "../fn"]);
    assert!(e.contains("'..' would leave the repository"), "{e}");
    let e = build_err(&["--git-url", &url, "--git-dir", "escape"]);
    assert!(
        e.contains("greeting.js"),
        "a link out of the function's directory is refused: {e}"
    );
    let unreachable = format!("git://127.0.0.1:{}/fn.git", free_port());
    let e = build_err(&["--git-url", &unreachable]);
    assert!(e.contains(&unreachable) && e.contains("cannot reach it"), "{e}");
    let e = build_err(&["--git-url=--upload-pack=touch /tmp/x"]);
    assert!(e.contains("not a git URL"), "{e}");
    let e = build_err(&["--git-url", "file:///etc"]);
    assert!(e.contains("not a git URL"), "{e}");
}

#[test]
fn smart_http_with_basic_auth() {
    let r = repo();
    let (_server, url) = git_http(r.dir.path());
    let auth = temp_dir("git-auth-");
    std::fs::write(auth.path().join("username"), USER).unwrap();
    std::fs::write(auth.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    let out = temp_dir("git-out-");
    let layout = out.path().join("l");
    let j = build_ok(
        &[
            "--git-url",
            &url,
            "--git-dir",
            "fn",
            "--git-auth",
            auth.path().to_str().unwrap(),
        ],
        &layout,
    );
    assert!(!j.to_string().contains(PASSWORD));
    assert_eq!(labels(&layout)["org.opencontainers.image.revision"], r.v2.as_str());

    let e = build_err(&["--git-url", &url, "--git-dir", "fn"]);
    assert!(e.contains(&url) && e.contains("authentication required"), "{e}");
    let wrong = temp_dir("git-auth-");
    std::fs::write(wrong.path().join("username"), USER).unwrap();
    std::fs::write(wrong.path().join("password"), "not-the-password").unwrap();
    let e = build_err(&[
        "--git-url",
        &url,
        "--git-dir",
        "fn",
        "--git-auth",
        wrong.path().to_str().unwrap(),
    ]);
    assert!(e.contains("the username or password is wrong"), "{e}");
    // Credentials in the URL are not repeated anywhere.
    let with_creds = url.replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    let o = build(&["--git-url", &with_creds, "--git-dir", "fn"], &out.path().join("c"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains(PASSWORD) && !String::from_utf8_lossy(&o.stdout).contains(PASSWORD));
    assert_eq!(
        labels(&out.path().join("c"))["org.opencontainers.image.source"],
        url.as_str()
    );
}

/// A build Job's fetch step (`fnbuild fetch-source`, the only step with the git credentials):
/// one commit into the directory the later steps read, no `.git` and no credential left there.
#[test]
fn the_fetch_step_leaves_the_commit_for_the_later_steps_and_no_credential() {
    let r = repo();
    let (_server, url) = git_http(r.dir.path());
    let auth = temp_dir("git-auth-");
    std::fs::write(auth.path().join("username"), USER).unwrap();
    std::fs::write(auth.path().join("password"), PASSWORD).unwrap();
    let into = temp_dir("git-fetch-");
    let o = fnbuild()
        .args([
            "fetch-source",
            "--git-url",
            &url,
            "--git-ref",
            &r.v1,
            "--git-dir",
            "fn",
            "--git-auth",
        ])
        .arg(auth.path())
        .arg(into.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let j: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["commit"], r.v1.as_str());
    let fn_dir = into.path().join("checkout/fn");
    assert_eq!(j["source"], fn_dir.to_str().unwrap());
    assert!(std::fs::read_to_string(fn_dir.join("handler.js"))
        .unwrap()
        .contains("v1"));
    assert!(!into.path().join("checkout/.git").exists());
    let left: Vec<PathBuf> = walk(into.path());
    assert!(
        !left
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()))),
        "{left:?}"
    );
    // The later steps build from it as from any directory.
    let out = temp_dir("git-out-");
    let layout = out.path().join("l");
    let o = fnbuild()
        .arg("build")
        .arg(&fn_dir)
        .args(["--runtime", "nodejs20", "--base", &node_base(), "--revision", &r.v1])
        .arg("--output")
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(labels(&layout)["org.opencontainers.image.revision"], r.v1.as_str());
    // A wrong password: one line naming the repository.
    std::fs::write(auth.path().join("password"), "not-the-password").unwrap();
    let o = fnbuild()
        .args(["fetch-source", "--git-url", &url, "--git-ref", "main", "--git-auth"])
        .arg(auth.path())
        .arg(temp_dir("git-fetch-").path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert!(errors.len() == 1 && errors[0].contains(&url), "{stderr}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A --git-auth directory with `key` (and `password`, Kyma's name for its passphrase).
fn key_auth(key: &Path, passphrase: Option<&str>) -> tempfile::TempDir {
    let d = temp_dir("git-key-");
    std::fs::copy(key, d.path().join("key")).unwrap();
    if let Some(p) = passphrase {
        std::fs::write(d.path().join("password"), p).unwrap();
    }
    d
}

#[test]
fn ssh_with_keys_and_host_keys() {
    let r = repo();
    let s = sshd(r.dir.path());
    let known = s.dir.join("known_hosts");
    let known = known.to_str().unwrap();
    let out = temp_dir("git-out-");
    let plain = key_auth(&s.dir.join("client"), None);
    let with_pass = key_auth(&s.dir.join("client-pass"), Some(KEY_PASSPHRASE));
    for (i, auth) in [&plain, &with_pass].iter().enumerate() {
        let layout = out.path().join(format!("l{i}"));
        let args = [
            "--git-url",
            &s.url,
            "--git-dir",
            "fn",
            "--git-auth",
            auth.path().to_str().unwrap(),
            "--git-known-hosts",
            known,
        ];
        let j = build_ok(&args, &layout);
        assert!(!j.to_string().contains(KEY_PASSPHRASE));
        assert_eq!(labels(&layout)["org.opencontainers.image.revision"], r.v2.as_str());
    }
    // A host key nobody vouched for is refused, unless told to accept any.
    let empty = s.dir.join("empty_known_hosts");
    let plain_dir = plain.path().to_str().unwrap();
    let e = build_err(&[
        "--git-url",
        &s.url,
        "--git-dir",
        "fn",
        "--git-auth",
        plain_dir,
        "--git-known-hosts",
        empty.to_str().unwrap(),
    ]);
    assert!(e.contains("SSH host key is not known"), "{e}");
    build_ok(
        &[
            "--git-url",
            &s.url,
            "--git-dir",
            "fn",
            "--git-auth",
            plain_dir,
            "--git-insecure-ignore-host-key",
        ],
        &out.path().join("any"),
    );
    // A key the server does not know; a passphrase that is wrong.
    let stranger = key_auth(&s.dir.join("stranger"), None);
    let e = build_err(&[
        "--git-url",
        &s.url,
        "--git-auth",
        stranger.path().to_str().unwrap(),
        "--git-known-hosts",
        known,
    ]);
    assert!(e.contains("the server does not accept the key"), "{e}");
    let wrong = key_auth(&s.dir.join("client-pass"), Some("not-the-passphrase"));
    let e = build_err(&[
        "--git-url",
        &s.url,
        "--git-auth",
        wrong.path().to_str().unwrap(),
        "--git-known-hosts",
        known,
    ]);
    eprintln!("a wrong passphrase: {e}");
    assert!(!e.contains("not-the-passphrase"), "{e}");
    assert!(
        e.contains("the key's passphrase is wrong, or the server does not accept the key"),
        "{e}"
    );
}
