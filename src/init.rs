//! `fnbuild init`: writes a working hello-world function for a runtime from `templates/<template>/`.

use crate::function::runtime::Runtimes;
use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};
use std::path::{Path, PathBuf};

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Writes the runtime's scaffold into `dir` (created if missing; refused if not empty) and
/// returns the files written. `{{name}}` in the templates becomes the directory's name and
/// `{{runtime}}` the runtime's.
pub fn init(runtimes: &Runtimes, runtime: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let runtime = runtimes.load(runtime)?;
    let template = TEMPLATES.get_dir(&runtime.spec.template).with_context(|| {
        format!(
            "runtime {} names template '{}', which does not exist",
            runtime.name, runtime.spec.template
        )
    })?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: fnbuild init writes only into a new or empty directory",
                dir.display()
            );
        }
    }
    let name = function_name(dir);
    let mut written = Vec::new();
    for file in template.files() {
        let rel = file
            .path()
            .strip_prefix(template.path())
            .expect("template files are below the template");
        let target = dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = String::from_utf8_lossy(file.contents())
            .replace("{{name}}", &name)
            .replace("{{runtime}}", &runtime.name);
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        written.push(target);
    }
    written.sort();
    Ok(written)
}

/// A name usable as an npm package, an image name and a Kubernetes object name.
fn function_name(dir: &Path) -> String {
    let raw = dir
        .canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "function".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_has_a_scaffold_with_its_handler_and_dependency_file() {
        for runtime in Runtimes::Embedded.names().unwrap() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("My Function");
            let files = init(&Runtimes::Embedded, &runtime, &dir).unwrap();
            let spec = Runtimes::Embedded.load(&runtime).unwrap().spec;
            for f in [&spec.handler_file, &spec.dependency_file, &"README.md".to_string()] {
                assert!(files.contains(&dir.join(f)), "{runtime}: {f} in {files:?}");
            }
            let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(
                readme.contains(&format!("--runtime {runtime}")) && readme.contains("my-function"),
                "{readme}"
            );
            assert!(!readme.contains("{{"), "{readme}");
        }
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let err = init(&Runtimes::Embedded, "nodejs20", tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("is not empty: fnbuild init writes only into a new or empty directory"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
