//! `fnbuild completions SHELL` and `fnbuild man`, checked by the programs that read them: bash
//! loads the completion script and completes with it; groff renders the man page without a
//! warning.

mod common;

use common::*;
use std::process::{Command, Stdio};

#[test]
fn bash_completes_fnbuild_with_the_script_it_prints() {
    setup();
    let script = run_ok(fnbuild().args(["completions", "bash"]));
    let dir = temp_dir("completions-");
    let file = dir.path().join("fnbuild.bash");
    std::fs::write(&file, &script).unwrap();
    // What bash offers after `fnbuild bu` and after `fnbuild build --runt`.
    let complete = |words: &str| {
        let line = format!(
            "source {f}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _fnbuild fnbuild \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[@]}}\"",
            f = file.display()
        );
        run_ok(Command::new("bash").args(["-c", &line]))
    };
    let subcommands = complete("fnbuild bu");
    assert_eq!(
        subcommands.split_whitespace().collect::<Vec<_>>(),
        ["build"],
        "{subcommands}"
    );
    let flags = complete("fnbuild build --runt");
    assert!(flags.split_whitespace().any(|w| w == "--runtime"), "{flags}");
    let out = fnbuild().args(["completions", "csh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: bash"));
}

#[test]
fn the_man_page_renders_without_a_warning_and_names_every_command() {
    setup();
    let page = run_ok(fnbuild().arg("man"));
    let mut groff = Command::new("groff")
        // Plain ASCII: no bold or underline, by overstriking or by escape sequences.
        .args(["-man", "-Tascii", "-ww", "-P-bcou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (groff-base, installed by tests/support/setup.sh)");
    use std::io::Write;
    groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff's warnings");
    // As a reader sees it.
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "fnbuild-build",
        "fnbuild-install-dependencies",
        "fnbuild-fetch-source",
        "fnbuild-init",
        "fnbuild-completions",
        "fnbuild-man",
    ] {
        assert!(text.contains(command), "{command} in the man page:\n{text}");
    }
}
