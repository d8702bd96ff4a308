//! git's and ssh's complaints, as one line that names the repository and says what to do. The
//! repository is named by its public URL; whatever git printed is redacted of every secret.

use super::{Auth, Request};

fn has(stderr: &str, needles: &[&str]) -> bool {
    let s = stderr.to_ascii_lowercase();
    needles.iter().any(|n| s.contains(n))
}

/// The error for a failed git command.
pub fn explain(stderr: &str, url: &str, req: &Request) -> anyhow::Error {
    let reference = req.reference.as_deref().unwrap_or("the default branch");
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("fatal: ").trim_start_matches("error: "))
        .unwrap_or("git failed");
    let what = if has(
        stderr,
        &[
            "host key verification failed",
            "no matching host key",
            "remote host identification has changed",
        ],
    ) {
        "its SSH host key is not known (give --git-known-hosts FILE with it, or --git-insecure-ignore-host-key)"
            .to_string()
    } else if has(
        stderr,
        &[
            "authentication failed",
            "could not read username",
            "could not read password",
            "permission denied",
            "invalid username or password",
            "http basic: access denied",
            "returned error: 401",
            "returned error: 403",
        ],
    ) {
        match &req.auth {
            None => "authentication required (give --git-auth DIR)".to_string(),
            Some(Auth::Basic { .. }) => "authentication failed: the username or password is wrong".to_string(),
            Some(Auth::Key { passphrase: None, .. }) => {
                "authentication failed: the server does not accept the key".to_string()
            }
            // ssh asked for the passphrase and gave up on the key without saying why.
            Some(Auth::Key {
                passphrase: Some(_), ..
            }) => "authentication failed: the key's passphrase is wrong, or the server does not accept the key"
                .to_string(),
        }
    } else if has(
        stderr,
        &[
            "incorrect passphrase",
            "bad passphrase",
            "error in libcrypto",
            "invalid format",
            "load key",
        ],
    ) {
        "the SSH key cannot be read (a wrong passphrase, or not a private key)".to_string()
    } else if has(
        stderr,
        &[
            "couldn't find remote ref",
            "not our ref",
            "no such remote ref",
            "unadvertised object",
            "remote error: upload-pack: not our ref",
        ],
    ) {
        format!("reference {reference} not found")
    } else if has(
        stderr,
        &[
            "repository not found",
            "does not appear to be a git repository",
            "not found",
            "no such repository",
        ],
    ) {
        "no repository there".to_string()
    } else if has(
        stderr,
        &[
            "could not resolve host",
            "connection refused",
            "connection timed out",
            "network is unreachable",
            "failed to connect",
            "no route to host",
            "could not connect",
        ],
    ) {
        format!("cannot reach it: {}", crate::secrets::redact(last))
    } else {
        crate::secrets::redact(last)
    };
    anyhow::anyhow!("git repository {url} ({reference}): {what}")
}

#[cfg(test)]
mod tests {
    use super::super::HostKeys;
    use super::*;

    fn req(auth: Option<Auth>) -> Request {
        Request {
            url: "https://u:s3cr3tpw@example.com/r.git".into(),
            reference: Some("main".into()),
            dir: None,
            auth,
            host_keys: HostKeys::Known(None),
        }
    }

    #[test]
    fn one_line_naming_the_repository() {
        let e = explain(
            "fatal: Authentication failed for 'https://example.com/r.git/'\n",
            "https://example.com/r.git",
            &req(None),
        );
        assert_eq!(
            e.to_string(),
            "git repository https://example.com/r.git (main): authentication required (give --git-auth DIR)"
        );
        let basic = Some(Auth::Basic {
            username: "u".into(),
            password: "s3cr3tpw".into(),
        });
        let e = explain(
            "remote: HTTP Basic: Access denied\nfatal: Authentication failed",
            "https://example.com/r.git",
            &req(basic),
        );
        assert!(e.to_string().ends_with("the username or password is wrong"), "{e}");
        let e = explain("fatal: couldn't find remote ref nope\n", "U", &req(None));
        assert!(e.to_string().ends_with("reference main not found"), "{e}");
        let e = explain(
            "Host key verification failed.\nfatal: Could not read from remote repository.",
            "U",
            &req(None),
        );
        assert!(e.to_string().contains("--git-known-hosts"), "{e}");
    }

    #[test]
    fn what_git_printed_loses_its_secrets() {
        crate::secrets::register("s3cr3tpw");
        let e = explain(
            "fatal: something odd with https://u:s3cr3tpw@example.com\n",
            "https://example.com/r.git",
            &req(None),
        );
        assert!(!e.to_string().contains("s3cr3tpw"), "{e}");
    }
}
