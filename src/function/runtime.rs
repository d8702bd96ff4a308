//! Runtimes as data: `runtimes/<name>/runtime.toml` says where a function and its server go in the
//! image and how the image runs; `runtimes/<server>/server/` holds the server's files.
//! The tree is compiled into the binary; `--runtimes-dir` reads another one from disk.

use crate::oci::layer::{Content, EntryKind};
use include_dir::{include_dir, Dir};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/runtimes");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub description: String,
    pub base_image: String,
    pub server: String,
    /// The scaffold `fnbuild init` writes: `templates/<template>/`.
    pub template: String,
    pub server_dir: String,
    pub function_dir: String,
    pub dependency_dir: String,
    pub handler_file: String,
    pub dependency_file: String,
    pub source_key: String,
    pub dependencies_key: String,
    pub user: String,
    pub working_dir: String,
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    pub port: u16,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The tool that installs the dependency file: `npm` or `pip` (default: from `dependency_file`,
    /// package.json → npm, requirements.txt → pip; none for other files).
    #[serde(default)]
    pub installer: Option<String>,
    /// The runtime's Python version (`3.12`): pip picks wheels for it.
    #[serde(default)]
    pub python_version: Option<String>,
    /// The newest manylinux glibc the base image has (`2.36`): pip may pick wheels up to
    /// manylinux_<this>; without it, manylinux2014 (glibc 2.17) at most.
    #[serde(default)]
    pub manylinux_glibc: Option<String>,
    /// Set when Kyma has deprecated the runtime: what to tell the user (builds still work, and
    /// log it once as a warning). Data, so a runtime is retired by editing its runtime.toml.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// Where the runtime's libraries go in the image (`/usr/src/app/node_modules`): the packages
    /// the lock files in `runtimes/<server>/libraries/` pin, installed with `installer`. None: no
    /// library layer.
    #[serde(default)]
    pub libraries_dir: Option<String>,
    /// How a function goes onto a Kyma-style runtime image (`build --runtime-image`). None: the
    /// runtime has no such mode.
    #[serde(default)]
    pub runtime_image: Option<RuntimeImageSpec>,
}

/// `build --runtime-image IMAGE` (Kyma's `spec.runtimeImageOverride`): IMAGE brings its own
/// server, which runs; fnbuild adds the function at `function_dir` and its packages at
/// `dependency_dir`, and keeps the image's Entrypoint, Cmd, Env, User and WorkingDir.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeImageSpec {
    /// The working directory when the image names none.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The user when the image names none.
    pub user: String,
    /// Set where the image's Env lacks the name (a Pod's own env wins over both).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Put in front of the image's own value, `:`-separated (`PYTHONPATH`).
    #[serde(default)]
    pub prepend_env: BTreeMap<String, String>,
}

impl RuntimeSpec {
    /// The installer for the dependency file, if any: `npm` or `pip`.
    pub fn installer(&self) -> Option<&str> {
        match (&self.installer, self.dependency_file.as_str()) {
            (Some(i), _) => Some(i.as_str()),
            (None, "package.json") => Some("npm"),
            (None, "requirements.txt") => Some("pip"),
            _ => None,
        }
    }
}

/// A file of a runtime's server, relative to `server_dir`.
#[derive(Debug, Clone)]
pub struct ServerFile {
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub spec: RuntimeSpec,
    pub server_files: Vec<ServerFile>,
    /// The lock files of `runtimes/<server>/libraries/` (with `libraries_dir`), sorted by name.
    pub libraries: Vec<LibraryFile>,
}

/// A file of `runtimes/<server>/libraries/`: what the installer is given.
#[derive(Debug, Clone)]
pub struct LibraryFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown runtime '{name}': choose one of {known}")]
    Unknown { name: String, known: String },
    #[error("runtime '{name}': {path} is not valid: {message}")]
    Invalid {
        name: String,
        path: String,
        message: String,
    },
    #[error("cannot read runtimes directory {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// Where runtime definitions come from.
#[derive(Debug, Clone)]
pub enum Runtimes {
    Embedded,
    Disk(PathBuf),
}

impl Runtimes {
    /// Names of the runtimes available (directories holding a runtime.toml), sorted.
    pub fn names(&self) -> Result<Vec<String>, RuntimeError> {
        let mut names: Vec<String> = match self {
            Runtimes::Embedded => EMBEDDED
                .dirs()
                .filter(|d| d.get_file(d.path().join("runtime.toml")).is_some())
                .filter_map(|d| d.path().file_name()?.to_str().map(String::from))
                .collect(),
            Runtimes::Disk(root) => std::fs::read_dir(root)
                .map_err(|source| RuntimeError::Read {
                    path: root.clone(),
                    source,
                })?
                .filter_map(Result::ok)
                .filter(|e| e.path().join("runtime.toml").is_file())
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect(),
        };
        names.sort();
        Ok(names)
    }

    pub fn load(&self, name: &str) -> Result<Runtime, RuntimeError> {
        let names = self.names()?;
        if !names.iter().any(|n| n == name) {
            return Err(RuntimeError::Unknown {
                name: name.into(),
                known: names.join(", "),
            });
        }
        let invalid = |path: &str, message: String| RuntimeError::Invalid {
            name: name.into(),
            path: path.into(),
            message,
        };
        let toml_path = format!("{name}/runtime.toml");
        let text = self
            .read_text(&toml_path)
            .ok_or_else(|| invalid(&toml_path, "not UTF-8".into()))?;
        let spec: RuntimeSpec = toml::from_str(&text).map_err(|e| invalid(&toml_path, e.message().to_string()))?;
        for (field, dir) in [
            ("server_dir", &spec.server_dir),
            ("function_dir", &spec.function_dir),
            ("dependency_dir", &spec.dependency_dir),
            ("working_dir", &spec.working_dir),
            ("libraries_dir", spec.libraries_dir.as_ref().unwrap_or(&spec.server_dir)),
            (
                "runtime_image.working_dir",
                (spec.runtime_image.as_ref().and_then(|r| r.working_dir.as_ref())).unwrap_or(&spec.server_dir),
            ),
        ] {
            if !dir.starts_with('/') || dir.split('/').any(|c| c == ".." || c == ".") {
                return Err(invalid(
                    &toml_path,
                    format!("{field} must be an absolute path without . or .. ({dir})"),
                ));
            }
        }
        match spec.installer() {
            None | Some("npm") => {}
            Some("pip") => {
                if !spec.python_version.as_deref().is_some_and(is_dotted_pair) {
                    return Err(invalid(
                        &toml_path,
                        "installer pip needs python_version = \"MAJOR.MINOR\" (e.g. \"3.12\")".into(),
                    ));
                }
            }
            Some(other) => return Err(invalid(&toml_path, format!("installer must be npm or pip ({other})"))),
        }
        if let Some(glibc) = &spec.manylinux_glibc {
            if !is_dotted_pair(glibc) || !glibc.starts_with("2.") {
                return Err(invalid(
                    &toml_path,
                    format!("manylinux_glibc must look like 2.36 ({glibc})"),
                ));
            }
        }
        // Logged as one warning line.
        if spec
            .deprecated
            .as_ref()
            .is_some_and(|d| d.trim().is_empty() || d.contains('\n'))
        {
            return Err(invalid(&toml_path, "deprecated must be a one-line message".into()));
        }
        if !is_plain_name(&spec.server) {
            return Err(invalid(
                &toml_path,
                format!("server must name a directory beside the runtimes ({})", spec.server),
            ));
        }
        let server_root = format!("{}/server", spec.server);
        let server_files = self.server_files(&server_root);
        if server_files.is_empty() {
            return Err(invalid(&server_root, "no server files".into()));
        }
        let libraries = match &spec.libraries_dir {
            Some(_) => {
                let root = format!("{}/libraries", spec.server);
                let files = self.library_files(&root);
                let wanted: &[&str] = match spec.installer() {
                    Some("npm") => &["package.json", "package-lock.json"],
                    Some("pip") => &["requirements.txt"],
                    _ => return Err(invalid(&toml_path, "libraries_dir needs installer npm or pip".into())),
                };
                if let Some(missing) = wanted.iter().find(|w| !files.iter().any(|f| f.name == **w)) {
                    return Err(invalid(&root, format!("libraries_dir is set but {missing} is missing")));
                }
                files
            }
            None => Vec::new(),
        };
        Ok(Runtime {
            name: name.into(),
            spec,
            server_files,
            libraries,
        })
    }

    fn read_text(&self, path: &str) -> Option<String> {
        match self {
            Runtimes::Embedded => EMBEDDED.get_file(path)?.contents_utf8().map(String::from),
            Runtimes::Disk(root) => std::fs::read_to_string(root.join(path)).ok(),
        }
    }

    /// The files directly in `root` (the lock files), sorted by name.
    fn library_files(&self, root: &str) -> Vec<LibraryFile> {
        let mut files: Vec<LibraryFile> = match self {
            Runtimes::Embedded => EMBEDDED
                .get_dir(root)
                .map(|d| {
                    d.files()
                        .filter_map(|f| {
                            Some(LibraryFile {
                                name: f.path().file_name()?.to_str()?.to_string(),
                                bytes: f.contents().to_vec(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Runtimes::Disk(base) => std::fs::read_dir(base.join(root))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    Some(LibraryFile {
                        name: e.file_name().to_str()?.to_string(),
                        bytes: std::fs::read(e.path()).ok()?,
                    })
                })
                .collect(),
        };
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    fn server_files(&self, server_root: &str) -> Vec<ServerFile> {
        let mut files = Vec::new();
        match self {
            Runtimes::Embedded => {
                if let Some(dir) = EMBEDDED.get_dir(server_root) {
                    collect_embedded(dir, Path::new(server_root), &mut files);
                }
            }
            Runtimes::Disk(root) => {
                let base = root.join(server_root);
                for entry in walkdir::WalkDir::new(&base)
                    .min_depth(1)
                    .sort_by_file_name()
                    .into_iter()
                    .flatten()
                {
                    let Ok(rel) = entry.path().strip_prefix(&base) else {
                        continue;
                    };
                    let Some(path) = rel.to_str().map(String::from) else {
                        continue;
                    };
                    let kind = if entry.file_type().is_dir() {
                        EntryKind::Dir
                    } else {
                        EntryKind::File {
                            content: Content::Path(entry.path().to_path_buf()),
                            executable: super::fs::is_executable(entry.path()).unwrap_or(false),
                        }
                    };
                    files.push(ServerFile { path, kind });
                }
            }
        }
        files
    }
}

fn collect_embedded(dir: &'static Dir<'static>, root: &Path, out: &mut Vec<ServerFile>) {
    for file in dir.files() {
        if let Ok(rel) = file.path().strip_prefix(root) {
            out.push(ServerFile {
                path: rel.to_string_lossy().into_owned(),
                kind: EntryKind::File {
                    content: Content::Bytes(Cow::Borrowed(file.contents())),
                    executable: false,
                },
            });
        }
    }
    for sub in dir.dirs() {
        if let Ok(rel) = sub.path().strip_prefix(root) {
            out.push(ServerFile {
                path: rel.to_string_lossy().into_owned(),
                kind: EntryKind::Dir,
            });
        }
        collect_embedded(sub, root, out);
    }
}

/// `3.12`, `2.36`: two dot-separated numbers.
fn is_dotted_pair(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|c| c.is_ascii_digit()))
    })
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_runtimes_are_compiled_in() {
        assert_eq!(
            Runtimes::Embedded.names().unwrap(),
            ["nodejs20", "nodejs22", "nodejs24", "python312"]
        );
        for name in ["nodejs20", "nodejs22", "nodejs24", "python312"] {
            let rt = Runtimes::Embedded.load(name).unwrap();
            assert_eq!(rt.spec.env["FUNC_RUNTIME"], name);
            assert!(rt.server_files.iter().any(|f| f.path.starts_with("server.")), "{name}");
        }
    }

    #[test]
    fn only_nodejs20_is_deprecated_and_its_message_names_the_successors() {
        let note = Runtimes::Embedded.load("nodejs20").unwrap().spec.deprecated.unwrap();
        assert!(note.contains("deprecated in Kyma"), "{note}");
        assert!(note.contains("nodejs22") && note.contains("nodejs24"), "{note}");
        assert!(!note.contains('\n'), "one log line: {note}");
        for name in ["nodejs22", "nodejs24", "python312"] {
            assert_eq!(Runtimes::Embedded.load(name).unwrap().spec.deprecated, None, "{name}");
        }
    }

    #[test]
    fn an_unknown_runtime_names_the_known_ones() {
        let err = Runtimes::Embedded.load("nodejs18").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown runtime 'nodejs18': choose one of nodejs20, nodejs22, nodejs24, python312"
        );
        assert!(Runtimes::Embedded.load("../runtimes/nodejs20").is_err());
    }

    #[test]
    fn a_runtimes_dir_on_disk_overrides_the_compiled_in_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tiny")).unwrap();
        std::fs::create_dir_all(dir.path().join("srv/server/lib")).unwrap();
        std::fs::write(dir.path().join("srv/server/lib/x.js"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("srv/libraries")).unwrap();
        for lock in ["package.json", "package-lock.json"] {
            std::fs::write(dir.path().join("srv/libraries").join(lock), "{}").unwrap();
        }
        let toml = Runtimes::Embedded
            .read_text("nodejs20/runtime.toml")
            .unwrap()
            .replace("server = \"node\"", "server = \"srv\"");
        std::fs::write(dir.path().join("tiny/runtime.toml"), &toml).unwrap();
        let rt = Runtimes::Disk(dir.path().into()).load("tiny").unwrap();
        let paths: Vec<_> = rt.server_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["lib", "lib/x.js"]);
        assert!(rt.spec.deprecated.is_some(), "a copy of nodejs20 is deprecated too");
        let locks: Vec<_> = rt.libraries.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(locks, ["package-lock.json", "package.json"]);

        std::fs::remove_file(dir.path().join("srv/libraries/package-lock.json")).unwrap();
        let err = Runtimes::Disk(dir.path().into()).load("tiny").unwrap_err().to_string();
        assert_eq!(
            err,
            "runtime 'tiny': srv/libraries is not valid: libraries_dir is set but package-lock.json is missing"
        );
        std::fs::write(dir.path().join("srv/libraries/package-lock.json"), "{}").unwrap();

        let two_lines = toml.replace("deprecated = \"runtime", "deprecated = \"\\nruntime");
        std::fs::write(dir.path().join("tiny/runtime.toml"), two_lines).unwrap();
        let err = Runtimes::Disk(dir.path().into()).load("tiny").unwrap_err().to_string();
        assert!(err.ends_with("deprecated must be a one-line message"), "{err}");
    }

    #[test]
    fn a_broken_runtime_toml_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bad")).unwrap();
        std::fs::write(dir.path().join("bad/runtime.toml"), "description = 1").unwrap();
        let err = Runtimes::Disk(dir.path().into()).load("bad").unwrap_err().to_string();
        assert!(
            err.starts_with("runtime 'bad': bad/runtime.toml is not valid:"),
            "{err}"
        );
    }
}
