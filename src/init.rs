//! `fnbuild init`: writes a working hello-world function for a runtime from `templates/<template>/`,
//! and with `--git-url` a `function.yaml` that builds it from that repository on Kubernetes.

use crate::function::runtime::Runtimes;
use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};
use std::path::{Path, PathBuf};

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Where the function will live: its repository, branch (or tag) and directory in it.
#[derive(Debug, Clone)]
pub struct GitHome {
    pub url: String,
    pub reference: String,
    /// Relative to the repository's root; `None`: the directory's own name.
    pub dir: Option<String>,
}

/// Writes the runtime's scaffold into `dir` (created if missing; refused if not empty) and
/// returns the files written. `{{name}}` in the templates becomes the directory's name and
/// `{{runtime}}` the runtime's. With `git`, also `function.yaml`: a Function built from there.
pub fn init(runtimes: &Runtimes, runtime: &str, dir: &Path, git: Option<&GitHome>) -> Result<Vec<PathBuf>> {
    let runtime = runtimes.load(runtime)?;
    if let Some(g) = git {
        crate::git::check_url(&g.url)?;
        crate::git::check_reference(&g.reference).with_context(|| format!("--git-ref {}", g.reference))?;
    }
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
    if let Some(g) = git {
        let base = g.dir.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let target = dir.join("function.yaml");
        std::fs::write(&target, function_yaml(&name, &runtime.name, g, &base))
            .with_context(|| format!("cannot write {}", target.display()))?;
        written.push(target);
    }
    written.sort();
    Ok(written)
}

/// A Kyma Function from `g`'s repository (strings quoted as JSON, which YAML reads as they are).
fn function_yaml(name: &str, runtime: &str, g: &GitHome, base: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let base = format!("/{}", base.trim_matches('/'));
    format!(
        "# {name}, built from {url} ({reference}, {base}) by fnbuild's controller: push this directory,\n\
         # then `kubectl apply -f function.yaml`. Every push to {reference} is built: the controller sees it\n\
         # within --git-poll-interval (default 60 s), or at once with a push event (a webhook to\n\
         # /git-webhook/NAMESPACE, signed with the token of the Secret fnbuild-git-webhook).\n\
         apiVersion: serverless.kyma-project.io/v1alpha2\n\
         kind: Function\n\
         metadata:\n  name: {name}\n\
         spec:\n  runtime: {runtime}\n  source:\n    gitRepository:\n      url: {}\n      baseDir: {}\n      reference: {}\n\
         \x20     # A private repository: a Secret with `username` and `password` (a token), or `key`\n\
         \x20     # (an SSH private key), named here.\n\
         \x20     # auth:\n\
         \x20     #   type: basic\n\
         \x20     #   secretName: {name}-git\n",
        q(&g.url),
        q(&base),
        q(&g.reference),
        url = crate::git::public_url(&g.url),
        reference = g.reference,
    )
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
            let files = init(&Runtimes::Embedded, &runtime, &dir, None).unwrap();
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
        let err = init(&Runtimes::Embedded, "nodejs20", tmp.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("is not empty: fnbuild init writes only into a new or empty directory"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn with_a_repository_a_function_yaml_that_builds_from_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("orders");
        let git = GitHome {
            url: "https://git.example.com/team/functions.git".into(),
            reference: "main".into(),
            dir: None,
        };
        let files = init(&Runtimes::Embedded, "nodejs24", &dir, Some(&git)).unwrap();
        assert!(files.contains(&dir.join("function.yaml")), "{files:?}");
        let y: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join("function.yaml")).unwrap()).unwrap();
        assert_eq!(y["metadata"]["name"], "orders");
        assert_eq!(y["spec"]["runtime"], "nodejs24");
        assert_eq!(
            y["spec"]["source"]["gitRepository"],
            serde_json::json!({"url": git.url, "baseDir": "/orders", "reference": "main"})
        );
        let bad = GitHome {
            url: "/local/repo".into(),
            ..git
        };
        let err = init(&Runtimes::Embedded, "nodejs24", &tmp.path().join("x"), Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("not a git URL"), "{err}");
        assert!(!tmp.path().join("x").exists(), "nothing written");
    }
}
