//! `fnbuild build --runtime-image IMAGE`: building on a Kyma-style runtime image (Kyma's
//! `spec.runtimeImageOverride`). The image *is* the runtime: its own server runs, so fnbuild adds
//! no server, no library layer and no entrypoint of its own; it adds the function's files and its
//! installed packages where Kyma's build put them (the runtime's `function_dir` and
//! `dependency_dir`), and keeps the image's Entrypoint, Cmd, Env, User and WorkingDir, filling in
//! only what the image leaves unset (`[runtime_image]` in runtime.toml).

use crate::function::runtime::{Runtime, RuntimeImageSpec};
use crate::oci::{BaseImage, Image};
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The runtime's `--runtime-image` mode, or a one-line refusal when it has none.
pub fn spec_for(runtime: &Runtime) -> Result<&RuntimeImageSpec> {
    match &runtime.spec.runtime_image {
        Some(spec) => Ok(spec),
        None => bail!(
            "the {} runtime cannot build on a runtime image (its runtime.toml has no [runtime_image]); use --base",
            runtime.name
        ),
    }
}

/// A runtime image must say how it starts its server: an Entrypoint or a Cmd.
pub fn check(base: &BaseImage) -> Result<()> {
    let run = &base.config["config"];
    let named = |key: &str| run[key].as_array().is_some_and(|a| !a.is_empty());
    if !named("Entrypoint") && !named("Cmd") {
        bail!(
            "the runtime image {} has no Entrypoint and no Cmd: it must start its own server (or build with --base, which adds fnbuild's)",
            base.name
        );
    }
    Ok(())
}

/// The image's config with what the runtime adds: `env` where the image lacks a name,
/// `prepend_env` in front of the image's value, and `user` / `working_dir` where it names none.
pub fn configure(image: &mut Image, spec: &RuntimeImageSpec) {
    let current = env_of(image);
    let value_of = |name: &str| {
        let prefix = format!("{name}=");
        current.iter().find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
    };
    for (name, value) in &spec.env {
        if value_of(name).is_none() {
            image.set_env(name, value);
        }
    }
    for (name, value) in &spec.prepend_env {
        match value_of(name).filter(|v| !v.is_empty()) {
            Some(old) => image.set_env(name, &format!("{value}:{old}")),
            None => image.set_env(name, value),
        }
    }
    let run = image.run_config();
    let unset = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if unset(run.get("User")) {
        run.insert("User".into(), json!(spec.user));
    }
    if let Some(dir) = &spec.working_dir {
        if unset(run.get("WorkingDir")) {
            run.insert("WorkingDir".into(), json!(dir));
        }
    }
}

fn env_of(image: &mut Image) -> Vec<String> {
    let run = image.run_config();
    (run.get("Env").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::runtime::Runtimes;
    use crate::oci::Family;

    fn image(config: Value) -> Image {
        Image {
            family: Family::Oci,
            config: json!({ "config": config }),
            layers: Vec::new(),
            annotations: Default::default(),
        }
    }

    fn env(image: &mut Image) -> Vec<String> {
        env_of(image)
    }

    #[test]
    fn the_images_own_config_is_kept_and_only_what_it_lacks_is_added() {
        let rt = Runtimes::Embedded.load("python312").unwrap();
        let spec = spec_for(&rt).unwrap();
        let mut img = image(json!({
            "Entrypoint": ["python", "/kubeless.py"],
            "User": "2000",
            "WorkingDir": "/srv",
            "Env": ["PATH=/usr/bin", "FUNC_HANDLER=handle", "PYTHONPATH=/opt/site"],
        }));
        configure(&mut img, spec);
        let e = env(&mut img);
        assert!(e.contains(&"FUNC_HANDLER=handle".to_string()), "{e:?}");
        assert!(e.contains(&"PYTHONPATH=/kubeless/lib:/opt/site".to_string()), "{e:?}");
        assert!(e.contains(&"KUBELESS_INSTALL_VOLUME=/kubeless".to_string()), "{e:?}");
        assert!(e.contains(&"FUNCTION_PATH=/kubeless".to_string()), "{e:?}");
        let run = img.run_config();
        assert_eq!(run["Entrypoint"], json!(["python", "/kubeless.py"]));
        assert_eq!(run["User"], "2000");
        assert_eq!(run["WorkingDir"], "/srv");
    }

    #[test]
    fn an_image_that_names_no_user_or_working_dir_gets_kymas() {
        let rt = Runtimes::Embedded.load("nodejs24").unwrap();
        let mut img = image(json!({ "Cmd": ["npm", "start"] }));
        configure(&mut img, spec_for(&rt).unwrap());
        let e = env(&mut img);
        assert!(e.contains(&"HANDLER_PATH=./function/handler.js".to_string()), "{e:?}");
        assert!(!e.iter().any(|v| v.starts_with("NODE_PATH=")), "{e:?}");
        let run = img.run_config();
        assert_eq!(run["User"], "1000");
        assert_eq!(run["WorkingDir"], "/usr/src/app");
        assert_eq!(run["Cmd"], json!(["npm", "start"]));
        assert!(run.get("Entrypoint").is_none());
    }
}
