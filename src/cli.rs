//! What the two programs' command lines share (`fnbuild` and `fnbuild-controller`): the log on
//! stderr without secrets or control characters, and an error as one line with its exit code.

use std::io::{IsTerminal, Write};

/// An error that exits with 2 (bad usage) rather than 1.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A bad-usage error (exit code 2).
pub fn usage(message: &str) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.to_string()))
}

/// How the log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// The log options every command of both programs takes.
#[derive(clap::Args)]
pub struct LogArgs {
    /// Log format on stderr: human-readable, or one JSON object per line (`fnbuild-controller
    /// run` logs JSON whenever stderr is not a terminal, as in a Pod).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More detail in the log (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl LogArgs {
    /// These options as command-line arguments (for a program run in this one's place).
    pub fn as_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.log_format == LogFormat::Json {
            out.push("--log-format=json".to_string());
        }
        if self.verbose > 0 {
            out.push(format!("-{}", "v".repeat(self.verbose as usize)));
        }
        if self.quiet {
            out.push("--quiet".to_string());
        }
        out
    }

    /// Starts the log on stderr as these options say (`format` instead of theirs when given).
    pub fn init(&self, format: Option<LogFormat>) {
        init_logging(format.unwrap_or(self.log_format), self.verbose, self.quiet)
    }
}

/// Starts the log on stderr: `verbose` 0, 1, 2 for info, debug, trace (`quiet`: warnings only)
/// for fnbuild's own crates, warnings for everything else; RUST_LOG overrides.
fn init_logging(style: LogFormat, verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if quiet {
        "warn"
    } else {
        ["info", "debug", "trace"][verbose.min(2) as usize]
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("fnbuild={level},fnbuild_controller={level},warn")));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || ScrubbedStderr { ansi });
    match style {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(ansi).with_target(false).init(),
    }
}

/// stderr for the log: each event (written whole) without the build's secrets, and, unless
/// colours are on, without control characters other than its final newline.
struct ScrubbedStderr {
    ansi: bool,
}

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let mut line = crate::secrets::redact(body);
        if !self.ansi {
            line = crate::text::escape_control(&line);
        }
        if text.ends_with('\n') {
            line.push('\n');
        }
        std::io::stderr().write_all(line.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The exit code of a build step given `--installed-dependencies` that found the dependencies
/// need an install no cache has: the controller builds again with an install step.
pub const EXIT_INSTALL_NEEDED: i32 = 3;

/// Writes a command's failure as one `error:` line (what failed, then why, as the chain of
/// contexts; no secret and no control character from a file name or a registry's message) and
/// returns the exit code: 0, 1, 2 for bad usage, or [`EXIT_INSTALL_NEEDED`].
pub fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let line = crate::secrets::redact(&dedup_chain(chain).join(": "));
            eprintln!("error: {}", crate::text::escape_control(&line));
            let not_installed = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::function::dependencies::DependencyError>(),
                    Some(crate::function::dependencies::DependencyError::NotInstalled { .. })
                )
            });
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else if not_installed {
                EXIT_INSTALL_NEEDED
            } else {
                1
            }
        }
    }
}

/// Flushes stdout and stderr and exits at once: everything a command wrote is closed by then,
/// and the async runtime's idle blocking threads need not be woken and joined one by one
/// (milliseconds that a build taking a few more would notice).
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// Drops messages already contained in the one before (thiserror sources are often repeated).
fn dedup_chain(chain: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for msg in chain {
        if !out.last().is_some_and(|prev| prev.contains(&msg)) {
            out.push(msg);
        }
    }
    out
}

/// Whether `path` is this process's stdout (the same file, pipe or terminal as descriptor 1).
pub fn is_stdout(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), Ok(out)) = (std::fs::metadata(path), std::fs::metadata("/proc/self/fd/1")) else {
        return false;
    };
    (target.dev(), target.ino()) == (out.dev(), out.ino())
}

/// `$XDG_CACHE_HOME/fnbuild` or `~/.cache/fnbuild`, for base manifests and configs.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|d| d.join("fnbuild"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_in_its_context_is_written_once() {
        let chain = vec![
            "cannot push: 401 unauthorized".to_string(),
            "401 unauthorized".to_string(),
            "token".into(),
        ];
        assert_eq!(dedup_chain(chain), ["cannot push: 401 unauthorized", "token"]);
    }

    #[test]
    fn usage_errors_exit_2_others_1() {
        assert_eq!(report(Err(usage("--json with stdout"))), 2);
        assert_eq!(report(Err(anyhow::anyhow!("no such file"))), 1);
        assert_eq!(report(Ok(())), 0);
    }
}
