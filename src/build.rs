//! The build pipeline: function source + runtime + base image → layers → image → every output.
//! Orchestration only: images are read and written by `formats`, layers by `oci::layer`.

use crate::formats::{self, Location, OutputSummary, WriteContext};
use crate::function::dependencies::{
    self,
    libraries::{self, LibraryStores},
    DependencyOptions, DependencySummary, Handoff, LocalCache, Provided, ProvidedLayer,
};
use crate::function::runtime::{Runtime, RuntimeImageSpec, Runtimes};
use crate::function::source::FunctionSource;
use crate::oci::digest::Digest;
use crate::oci::layer::{write_layer, EntryKind, LayerEntry, LayerError, WrittenLayer};
use crate::oci::layer_cache::LayerCache;
use crate::oci::index::{Built, BuiltIndex};
use crate::oci::platform::{Platform, Platforms, FUNCTION_PLATFORMS};
use crate::oci::reference::Reference;
use crate::oci::{rfc3339, BaseImage, BuiltImage, Image};
use crate::registry::{Client, PushForecast, RegistryOptions};
use crate::runtime_image;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Timestamp stamped on files and the image when SOURCE_DATE_EPOCH is not given: one second
/// after the epoch, as a zero time confuses some tools.
pub const DEFAULT_EPOCH: u64 = 1;
/// The latest timestamp an image may carry: 9999-12-31T23:59:59Z (RFC 3339 has four-digit years).
pub const MAX_EPOCH: u64 = 253_402_300_799;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source_dir: PathBuf,
    pub runtime: String,
    pub runtimes: Runtimes,
    pub base: Option<Location>,
    /// `base` is a Kyma-style runtime image with its own server (`--runtime-image`): no server,
    /// libraries or entrypoint of fnbuild's are added ([`crate::runtime_image`]).
    pub runtime_image: bool,
    pub outputs: Vec<Location>,
    pub source_date_epoch: Option<u64>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub source_url: Option<String>,
    pub revision: Option<String>,
    pub registry: RegistryOptions,
    /// The platforms to build for: one (`registry.platform`, an image) or several (an index).
    pub platforms: Platforms,
    /// The most layers the image may have, base included.
    pub max_layers: usize,
    pub digest_file: Option<PathBuf>,
    /// How npm / pip dependencies are installed and cached.
    pub dependencies: DependencyOptions,
    /// Where the runtime's library layer comes from.
    pub libraries: LibraryStores,
}

#[derive(Debug, Serialize)]
pub struct BuildResult {
    /// Digest of the image manifest (of the index, for several platforms).
    pub digest: String,
    pub media_type: String,
    pub runtime: String,
    /// A single-platform build's image: its `config_digest`, `base`, `layers`, `dependencies`
    /// at the top level, as before there were indexes.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub single: Option<ImageResult>,
    /// A multi-platform build's images, in the index's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformResult>,
    pub outputs: Vec<OutputSummary>,
    pub timings_ms: Timings,
}

/// One platform's image in an index.
#[derive(Debug, Serialize)]
pub struct PlatformResult {
    /// `os/architecture[/variant]`, from the base's config.
    pub platform: String,
    /// Digest of the image manifest.
    pub digest: String,
    #[serde(flatten)]
    pub image: ImageResult,
}

/// What an image is made of.
#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub config_digest: String,
    pub base: BaseSummary,
    pub layers: Vec<LayerSummary>,
    /// The dependency layer: where it came from (`cache`), its `key`, `install_ms`.
    pub dependencies: DependencySummary,
}

#[derive(Debug, Serialize)]
pub struct BaseSummary {
    pub name: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
pub struct LayerSummary {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// `base`, `libraries`, `runtime`, `dependencies` or `function`.
    pub role: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub base: u64,
    /// The runtime's library layer (from a store, or installed).
    pub libraries: u64,
    pub layers: u64,
    /// Cache look-ups, install and the dependency layer (after the base image is known).
    pub dependencies: u64,
    pub outputs: u64,
    pub total: u64,
}

/// What a build came to.
#[derive(Debug)]
pub enum BuildOutcome {
    /// The image, written to every output.
    Built(Box<BuildResult>),
    /// `--prepare-dependencies`: the caches were asked; `key` is the install requested, if any.
    Prepared {
        key: Option<String>,
        cache: DependencySummary,
    },
}

pub async fn build(opts: &BuildOptions) -> Result<BuildOutcome> {
    let started = Instant::now();
    let runtime = opts.runtimes.load(&opts.runtime)?;
    // Once per build, here where every build passes (not in the install step, which a build Job
    // runs between two builds of the same function).
    if let Some(note) = &runtime.spec.deprecated {
        tracing::warn!("{note}");
    }
    let image_mode = match (opts.runtime_image, &opts.base) {
        (false, _) => None,
        (true, Some(_)) => Some(runtime_image::spec_for(&runtime)?.clone()),
        (true, None) => bail!("a build on a runtime image needs the image (--runtime-image IMAGE)"),
    };
    let own_server = image_mode.is_none();
    let source = FunctionSource::load(&opts.source_dir, &runtime)?;
    // A malformed dependency file fails the build here, before anything runs or is written.
    let deps_plan = dependencies::plan(&source, &runtime)?;
    let epoch = opts.source_date_epoch.unwrap_or(DEFAULT_EPOCH);
    if epoch > MAX_EPOCH {
        bail!("SOURCE_DATE_EPOCH {epoch} is after the year 9999 (at most {MAX_EPOCH})");
    }
    // Every target is checked before any work: nothing is written when one of them cannot be.
    for output in &opts.outputs {
        formats::check(output)?;
    }
    if let Some(file) = &opts.digest_file {
        formats::check_writable_file(file).with_context(|| format!("cannot write the digest to {}", file.display()))?;
    }
    let base_location = match &opts.base {
        Some(b) => b.clone(),
        None => runtime
            .spec
            .base_image
            .parse()
            .map_err(anyhow::Error::msg)
            .context("runtime's default base image")?,
    };
    let needs_registry = base_location.is_registry()
        || opts.outputs.iter().any(Location::is_registry)
        || (deps_plan.is_some() && opts.dependencies.cache_repo.is_some());
    // Setting up TLS reads the system's CA store: only pay for it when a registry is involved.
    let client = if needs_registry {
        Some(Client::new(opts.registry.clone())?)
    } else {
        None
    };
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "runtime, source and registry client ready"
    );
    let work = crate::scratch::Scratch::new().context("cannot create a scratch directory")?;

    // The runtime's libraries: from a store in milliseconds; installed (once) when none has them.
    // A runtime image brings its own.
    let t = Instant::now();
    let libraries_layer = match own_server {
        true => libraries::provide(
            &runtime,
            &opts.libraries,
            opts.dependencies.npmrc.as_deref(),
            opts.dependencies.pip_conf.as_deref(),
            &opts.dependencies.hide,
            work.path(),
        )
        .await
        .with_context(|| format!("the {} runtime's libraries", runtime.name))?,
        false => None,
    };
    let libraries_time = t.elapsed();
    let libraries_digest = libraries_layer.as_ref().map(|l| l.digest.to_string());

    // The base image (one per platform) loads while our layers are written.
    let base_future = async {
        let t = Instant::now();
        let bases = read_bases(&base_location, opts, work.path(), client.as_ref()).await;
        (bases, t.elapsed())
    };
    let (forecast_tx, forecast_rx) = tokio::sync::oneshot::channel();
    let layers_future = {
        let (runtime, source, work) = (runtime.clone(), source.clone(), work.path().to_path_buf());
        let cache_dir = opts.registry.cache_dir.clone();
        let t = Instant::now();
        async move {
            let cache = cache_dir.map(|d| LayerCache::new(&d));
            let layers = tokio::task::spawn_blocking(move || {
                let forecast = |mut known: Vec<String>, new| {
                    known.extend(libraries_digest);
                    let _ = forecast_tx.send((known, new));
                };
                write_function_layers(&runtime, own_server, &source, epoch, &work, cache.as_ref(), forecast)
            })
            .await;
            (layers, t.elapsed())
        }
    };
    // Pushes learn early what they will carry, so that they can open upload sessions meanwhile.
    let preparing = matches!(opts.dependencies.handoff, Some(Handoff::Prepare(_)));
    let forecast_future = async {
        let (Some(client), Ok((known_layers, new_layers))) = (client.as_ref(), forecast_rx.await) else {
            return;
        };
        if preparing {
            return; // nothing is pushed in this step
        }
        for target in formats::registry::push_groups(&opts.outputs).iter().map(|g| g[0]) {
            let same_registry = |r: &Reference| (r.registry == target.registry).then(|| r.repository.clone());
            let base = match &base_location {
                Location::Registry(r) => same_registry(r),
                _ => None,
            };
            let cache = opts.dependencies.cache_repo.as_ref().and_then(same_registry);
            let forecast = PushForecast {
                known_layers: known_layers.clone(),
                new_layers,
                mount_from: base.into_iter().chain(cache).collect(),
            };
            client.prepare_push(target, forecast);
        }
    };
    // The installer's version (part of the dependency cache key) is asked meanwhile too.
    let probe_future = async {
        match &deps_plan {
            Some(plan) => {
                let memo = opts
                    .dependencies
                    .cache_dir
                    .as_ref()
                    .map(|d| LocalCache::new(d).installers_dir());
                Some(dependencies::probe_cached(plan.ecosystem, &runtime, memo.as_deref()).await)
            }
            None => None,
        }
    };
    let ((bases, base_time), (layers, layers_time), installer, ()) =
        tokio::join!(base_future, layers_future, probe_future, forecast_future);
    let bases = bases?;
    let (runtime_layer, function_layer) = layers.context("layer writer stopped")??;
    let ours = 1
        + usize::from(runtime_layer.is_some())
        + usize::from(libraries_layer.is_some())
        + usize::from(deps_plan.is_some());
    for base in &bases {
        tracing::info!(base = %base.name, digest = %base.manifest_digest, platform = %Platform::of_config(&base.config), layers = base.layers.len(), "base image");
        if !own_server {
            runtime_image::check(base)?;
        }
        if base.layers.len() + ours > opts.max_layers {
            bail!(
                "the base image {} has {} layers; with fnbuild's {ours} the image would have {}, more than --max-layers {} (container runtimes refuse about 128): flatten the base",
                base.name,
                base.layers.len(),
                base.layers.len() + ours,
                opts.max_layers
            );
        }
    }
    if bases.len() > 1 && opts.dependencies.handoff.is_some() && deps_plan.is_some() {
        bail!("a build for several platforms cannot hand its dependency install to another step (--prepare-dependencies, --installed-dependencies) yet: build for one platform, or install in the build");
    }

    // Each dependency layer's key needs its base image's digest: from a cache, or installed now,
    // every platform at once.
    let t = Instant::now();
    let mut deps_layers: Vec<Option<ProvidedLayer>> = bases.iter().map(|_| None).collect();
    if let (Some(plan), Some(installer)) = (&deps_plan, installer) {
        let installer = installer?;
        let several = bases.len() > 1;
        let (runtime, client) = (&runtime, client.as_ref());
        let provided = futures_util::future::try_join_all(bases.iter().map(|base| {
            let installer = &installer;
            let platform = Platform::of_config(&base.config);
            let work = match several {
                true => work.path().join(format!("dependencies-{}", platform.to_string().replace('/', "-"))),
                false => work.path().to_path_buf(),
            };
            async move {
                std::fs::create_dir_all(&work).context("cannot create a scratch directory")?;
                let ctx = dependencies::Context {
                    runtime,
                    base_digest: &base.manifest_digest,
                    base_config: &base.config,
                    epoch,
                    options: &opts.dependencies,
                    client,
                    work: &work,
                };
                let on = match several {
                    true => format!(" for {platform}"),
                    false => String::new(),
                };
                dependencies::provide(plan, installer, &ctx)
                    .await
                    .with_context(|| format!("installing the packages of {}{on}", plan.dependency_file))
            }
        }))
        .await?;
        for (slot, provided) in deps_layers.iter_mut().zip(provided) {
            match provided {
                Provided::Layer(layer) => *slot = Some(*layer),
                Provided::Requested { key } => {
                    return Ok(BuildOutcome::Prepared {
                        key: Some(key),
                        cache: DependencySummary::none(),
                    })
                }
            }
        }
    }
    let deps_time = t.elapsed();
    if let Some(Handoff::Prepare(_)) = &opts.dependencies.handoff {
        return Ok(BuildOutcome::Prepared {
            key: None,
            cache: deps_layers
                .pop()
                .flatten()
                .map(|d| d.summary)
                .unwrap_or_else(DependencySummary::none),
        });
    }

    let mut images = Vec::new();
    for (base, deps_layer) in bases.iter().zip(&deps_layers) {
        let image = assemble(
            opts,
            &runtime,
            &base_location,
            base,
            libraries_layer.as_ref(),
            runtime_layer.as_ref(),
            deps_layer.as_ref(),
            &function_layer,
            epoch,
            image_mode.as_ref(),
        )?;
        let platform = Platform::of_config(&base.config);
        tracing::info!(digest = %image.manifest_digest, %platform, "image");
        images.push((platform, image));
    }
    let built = match images.len() {
        1 => Built::Image(images.remove(0).1),
        _ => {
            let index = BuiltIndex::new(images);
            tracing::info!(digest = %index.digest, platforms = index.images.len(), "index");
            Built::Index(index)
        }
    };

    let t = Instant::now();
    let mut mount_from: Vec<(Digest, Reference)> = deps_layers
        .iter()
        .flatten()
        .filter_map(|d| Some((d.digest.clone(), d.registry_copy.clone()?)))
        .collect();
    let cache_repo = (opts.dependencies.cache_repo.as_ref()).zip(opts.dependencies.cache_signing_key.as_deref());
    if let (Some(client), Some((repo, signing_key)), Some(layer)) = (client.as_ref(), cache_repo, &libraries_layer) {
        let pushes_there = opts
            .outputs
            .iter()
            .any(|o| matches!(o, Location::Registry(r) if r.registry == repo.registry));
        if pushes_there {
            // The libraries are the same on every platform (pure JavaScript and Python).
            let target = Platform::of_config(&bases[0].config);
            if let Some(copy) = libraries::keep_in_cache_repo(client, repo, &runtime, layer, &target, signing_key).await
            {
                mount_from.push((layer.digest.clone(), copy));
            }
        }
    }
    let ctx = WriteContext {
        client: client.as_ref(),
        epoch,
        work: work.path(),
        mount_from: &mount_from,
    };
    let outputs = formats::write(&opts.outputs, &built, &ctx).await?;
    let outputs_time = t.elapsed();

    if let Some(file) = &opts.digest_file {
        std::fs::write(file, built.digest().as_str())
            .with_context(|| format!("cannot write the digest to {}", file.display()))?;
    }

    let mut platforms: Vec<PlatformResult> = built
        .images()
        .into_iter()
        .zip(bases.iter().zip(deps_layers))
        .map(|(image, (base, deps_layer))| PlatformResult {
            platform: Platform::of_config(&base.config).to_string(),
            digest: image.manifest_digest.to_string(),
            image: ImageResult {
                config_digest: image.config_digest.to_string(),
                base: BaseSummary {
                    name: base.name.clone(),
                    digest: base.manifest_digest.to_string(),
                },
                layers: layer_summaries(
                    image,
                    base,
                    libraries_layer.is_some(),
                    runtime_layer.is_some(),
                    deps_layer.is_some(),
                ),
                dependencies: deps_layer.map(|d| d.summary).unwrap_or_else(DependencySummary::none),
            },
        })
        .collect();
    let (single, platforms) = match &built {
        Built::Image(_) => (platforms.pop().map(|p| p.image), Vec::new()),
        Built::Index(_) => (None, platforms),
    };
    Ok(BuildOutcome::Built(Box::new(BuildResult {
        digest: built.digest().to_string(),
        media_type: built.media_type().to_string(),
        runtime: runtime.name.clone(),
        single,
        platforms,
        outputs,
        timings_ms: Timings {
            base: base_time.as_millis() as u64,
            libraries: libraries_time.as_millis() as u64,
            layers: layers_time.as_millis() as u64,
            dependencies: deps_time.as_millis() as u64,
            outputs: outputs_time.as_millis() as u64,
            total: started.elapsed().as_millis() as u64,
        },
    })))
}

/// The base image for each platform the options ask for, in their order. A base that holds
/// one image serves only its own platform; `--platform all` takes those of the base's that
/// functions run on ([`FUNCTION_PLATFORMS`]).
async fn read_bases(
    location: &Location,
    opts: &BuildOptions,
    work: &Path,
    client: Option<&Client>,
) -> Result<Vec<BaseImage>> {
    let wanted: Vec<Platform> = match &opts.platforms {
        Platforms::One(_) => {
            return Ok(vec![formats::read(location, &opts.registry.platform, work, client).await?]);
        }
        Platforms::List(list) => list.clone(),
        Platforms::All => match formats::platforms(location, client).await? {
            None => return Ok(vec![formats::read(location, &opts.registry.platform, work, client).await?]),
            Some(offered) => {
                let usable: Vec<Platform> = offered
                    .iter()
                    .filter(|p| FUNCTION_PLATFORMS.iter().any(|(os, arch)| p.os == *os && p.architecture == *arch))
                    .cloned()
                    .collect();
                if usable.is_empty() {
                    let names: Vec<String> = offered.iter().map(ToString::to_string).collect();
                    bail!(
                        "base image {location}: --platform all: it has none of the platforms functions run on (linux/amd64, linux/arm64); it has: {}",
                        names.join(", ")
                    );
                }
                usable
            }
        },
    };
    let bases = futures_util::future::try_join_all(wanted.iter().map(|p| formats::read(location, p, work, client))).await?;
    for (want, base) in wanted.iter().zip(&bases) {
        let got = Platform::of_config(&base.config);
        if !want.matches(&got.os, &got.architecture, got.variant.as_deref()) {
            bail!("base image {location}: it holds one image, for {got}, so it has no {want}: use a multi-platform base (an image index)");
        }
    }
    Ok(bases)
}

/// Each layer of `image` with its role (`base`, `libraries`, `runtime`, `dependencies`,
/// `function`), in the order assemble() appends them.
fn layer_summaries(
    image: &BuiltImage,
    base: &BaseImage,
    libraries: bool,
    runtime: bool,
    dependencies: bool,
) -> Vec<LayerSummary> {
    let roles = std::iter::repeat_n("base", base.layers.len())
        .chain(libraries.then_some("libraries"))
        .chain(runtime.then_some("runtime"))
        .chain(dependencies.then_some("dependencies"))
        .chain(["function"]);
    image
        .layers
        .iter()
        .zip(roles)
        .map(|(l, role)| LayerSummary {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.descriptor.size(),
            media_type: l.descriptor.media_type().to_string(),
            role,
        })
        .collect()
}

/// The install step of a build Job (`fnbuild install-dependencies`): installs what the prepare
/// step requested in `handoff`, if anything, and leaves the layer there. No registry is asked.
pub async fn install_dependencies(
    source_dir: &Path,
    runtime: &str,
    runtimes: &Runtimes,
    handoff: &Path,
    options: &DependencyOptions,
    step: dependencies::InstallStep,
) -> Result<Option<String>> {
    let runtime = runtimes.load(runtime)?;
    let source = FunctionSource::load(source_dir, &runtime)?;
    let plan = dependencies::plan(&source, &runtime)?;
    let installer = match &plan {
        Some(plan) => Some(dependencies::probe(plan.ecosystem, &runtime).await?),
        None => None,
    };
    let work = crate::scratch::Scratch::new().context("cannot create a scratch directory")?;
    let key = dependencies::install_requested(
        plan.as_ref(),
        installer.as_ref(),
        &runtime,
        handoff,
        options,
        work.path(),
        step,
    )
    .await
    .context("installing the requested dependencies")?;
    Ok(key)
}

/// The runtime's server layer (`with_server`) and the function's source layer. Once it is known
/// which of them the cache has (the files are read and hashed first), `forecast` is told: the
/// digests of those it has, and how many must be compressed anew.
fn write_function_layers(
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
fn assemble(
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
