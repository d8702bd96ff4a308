//! fnbuild's own layers (the runtime's server, the function's source) and the image assembled
//! over a base from them.

use super::BuildOptions;
use crate::formats::Location;
use crate::function::dependencies::ProvidedLayer;
use crate::function::runtime::{Runtime, RuntimeImageSpec};
use crate::function::source::FunctionSource;
use crate::oci::layer::{write_layer, EntryKind, LayerEntry, LayerError, WrittenLayer};
use crate::oci::layer_cache::LayerCache;
use crate::oci::{rfc3339, BaseImage, BuiltImage, Image};
use crate::runtime_image;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// The runtime's server layer (`with_server`) and the function's source layer. Once it is known
/// which of them the cache has (the files are read and hashed first), `forecast` is told: the
/// digests of those it has, and how many must be compressed anew.
pub(super) fn write_function_layers(
    runtime: &Runtime,
    with_server: bool,
    source: &FunctionSource,
    epoch: u64,
    work: &Path,
    cache: Option<&LayerCache>,
    forecast: impl FnOnce(Vec<String>, usize),
) -> Result<(Option<WrittenLayer>, WrittenLayer)> {
    let spec = &runtime.spec;
    let under = |dir: &str, path: &str| format!("{}/{path}", dir.trim_start_matches('/'));
    let root = |dir: &str| LayerEntry {
        path: dir.trim_start_matches('/').into(),
        kind: EntryKind::Dir,
    };

    let mut server = vec![root(&spec.server_dir)];
    server.extend(runtime.server_files.iter().map(|f| LayerEntry {
        path: under(&spec.server_dir, &f.path),
        kind: f.kind.clone(),
    }));
    let mut function = vec![root(&spec.function_dir)];
    function.extend(source.entries.iter().map(|e| LayerEntry {
        path: under(&spec.function_dir, &e.path),
        kind: e.kind.clone(),
    }));

    let server = with_server.then(|| Cached::look_up(server, epoch, cache));
    let function = Cached::look_up(function, epoch, cache);
    let known: Vec<String> = (server.iter().chain([&function]))
        .filter_map(|c| c.hit.as_ref().map(|l| l.digest.to_string()))
        .collect();
    let new = 1 + usize::from(server.is_some()) - known.len();
    forecast(known, new);

    // The two layers are independent: write them side by side.
    let (server_layer, function_layer) = std::thread::scope(|s| {
        let server_job = s.spawn(|| server.map(|l| l.write(&work.join("runtime-layer"), cache)));
        let function_layer = function.write(&work.join("function-layer"), cache);
        (server_job.join().expect("layer writer thread"), function_layer)
    });
    Ok((
        server_layer.transpose().context("runtime layer")?,
        function_layer.with_context(|| format!("function layer from {}", source.root.display()))?,
    ))
}

/// A layer's entries with what the layer cache knows of them.
struct Cached {
    entries: Vec<LayerEntry>,
    epoch: u64,
    key: Option<String>,
    hit: Option<WrittenLayer>,
}

impl Cached {
    fn look_up(entries: Vec<LayerEntry>, epoch: u64, cache: Option<&LayerCache>) -> Cached {
        let key = cache.and_then(|_| LayerCache::key(&entries, epoch));
        let hit = key.as_deref().and_then(|k| cache?.get(k));
        Cached {
            entries,
            epoch,
            key,
            hit,
        }
    }

    /// The layer from the cache when its inputs were compressed before, else written (and recorded).
    fn write(self, spool: &Path, cache: Option<&LayerCache>) -> Result<WrittenLayer, LayerError> {
        if let Some(hit) = self.hit {
            tracing::debug!(digest = %hit.digest, "layer unchanged: taken from the cache");
            return Ok(hit);
        }
        let layer = write_layer(self.entries, self.epoch, spool)?;
        if let (Some(cache), Some(k)) = (cache, self.key) {
            cache.put(&k, &layer);
        }
        Ok(layer)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn assemble(
    opts: &BuildOptions,
    runtime: &Runtime,
    base_location: &Location,
    base: &BaseImage,
    libraries_layer: Option<&WrittenLayer>,
    runtime_layer: Option<&WrittenLayer>,
    deps_layer: Option<&ProvidedLayer>,
    function_layer: &WrittenLayer,
    epoch: u64,
    image_mode: Option<&RuntimeImageSpec>,
) -> Result<BuiltImage> {
    let spec = &runtime.spec;
    let created = rfc3339(epoch);
    let mut image = Image::from_base(base);
    match image_mode {
        // The runtime image's own server runs, configured as the image says.
        Some(mode) => runtime_image::configure(&mut image, mode),
        None => {
            for (name, value) in &spec.env {
                image.set_env(name, value);
            }
            let run = image.run_config();
            run.insert("Entrypoint".into(), json!(spec.entrypoint));
            // An entrypoint of our own makes the base's Cmd meaningless (Docker resets it the same way).
            if spec.cmd.is_empty() {
                run.remove("Cmd");
            } else {
                run.insert("Cmd".into(), json!(spec.cmd));
            }
            run.insert("User".into(), json!(spec.user));
            run.insert("WorkingDir".into(), json!(spec.working_dir));
            let ports = run.entry("ExposedPorts").or_insert_with(|| json!({}));
            if let Some(ports) = ports.as_object_mut() {
                ports.insert(format!("{}/tcp", spec.port), json!({}));
            }
        }
    }
    for (k, v) in &opts.labels {
        image.set_label(k, v);
    }
    let mut annotations = vec![("org.opencontainers.image.created".to_string(), created.clone())];
    if base_location.is_registry() {
        annotations.push(("org.opencontainers.image.base.name".into(), base.name.clone()));
    }
    annotations.push((
        "org.opencontainers.image.base.digest".into(),
        base.manifest_digest.to_string(),
    ));
    for (key, value) in [
        ("org.opencontainers.image.source", &opts.source_url),
        ("org.opencontainers.image.revision", &opts.revision),
    ] {
        if let Some(v) = value {
            annotations.push((key.into(), v.clone()));
            image.set_label(key, v);
        }
    }
    annotations.extend(opts.annotations.iter().cloned());
    image.annotations.extend(annotations);
    image.config["created"] = json!(created);

    if let (Some(layer), Some(dir)) = (libraries_layer, &spec.libraries_dir) {
        image.append_layer(
            layer,
            &created,
            &format!("fnbuild: {} runtime libraries at {dir}", runtime.name),
        )?;
    }
    if let Some(layer) = runtime_layer {
        let what = format!("fnbuild: {} runtime server at {}", runtime.name, spec.server_dir);
        image.append_layer(layer, &created, &what)?;
    }
    if let Some(deps) = deps_layer {
        image.append_layer(
            &deps.written(),
            &created,
            &format!("fnbuild: {} at {}", spec.dependency_file, spec.dependency_dir),
        )?;
        if let Some(layer) = image.layers.last_mut() {
            layer.location = deps.location.clone();
        }
    }
    image.append_layer(
        function_layer,
        &created,
        &format!("fnbuild: function source at {}", spec.function_dir),
    )?;
    Ok(image.finish()?)
}
