//! The build pipeline: function source + runtime + base image → layers → image → every output.
//! Orchestration only: images are read and written by `formats`, layers by `oci::layer`.

mod bases;
mod layers;
mod referrers;
mod report;

pub use report::{BaseSummary, BuildResult, ImageResult, LayerSummary, PlatformResult, Timings};

use crate::formats::{self, Location, WriteContext};
use crate::function::dependencies::{
    self,
    libraries::{self, LibraryStores},
    DependencyOptions, DependencySummary, Handoff, LocalCache, Provided, ProvidedLayer,
};
use crate::function::runtime::Runtimes;
use crate::function::source::FunctionSource;
use crate::oci::digest::Digest;
use crate::oci::index::{Built, BuiltIndex};
use crate::oci::layer_cache::LayerCache;
use crate::oci::platform::{Platform, Platforms};
use crate::oci::reference::Reference;
use crate::registry::{Client, PushForecast, RegistryOptions};
use crate::runtime_image;
use anyhow::{bail, Context, Result};
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
    /// Attach an SPDX and a CycloneDX SBOM to each image (as referrers).
    pub sbom: bool,
    /// Attach SLSA v1 provenance to each image (as a referrer, a DSSE envelope).
    pub provenance: bool,
    /// Sign pushed images (cosign signatures) and the attestations (DSSE) with this key.
    pub signing_key: Option<std::sync::Arc<crate::attest::keys::SigningKey>>,
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
    let wall_started = std::time::SystemTime::now();
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
        let bases = bases::read_bases(&base_location, opts, work.path(), client.as_ref()).await;
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
                layers::write_function_layers(&runtime, own_server, &source, epoch, &work, cache.as_ref(), forecast)
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
                true => work.path().join(format!("dependencies-{}", platform.dir_name())),
                false => work.path().to_path_buf(),
            };
            // Each platform hands its install on in a directory of its own.
            let options = match (&opts.dependencies.handoff, several) {
                (Some(handoff), true) => std::borrow::Cow::Owned(DependencyOptions {
                    handoff: Some(handoff.for_platform(&platform)),
                    ..opts.dependencies.clone()
                }),
                _ => std::borrow::Cow::Borrowed(&opts.dependencies),
            };
            async move {
                std::fs::create_dir_all(&work).context("cannot create a scratch directory")?;
                if let (true, Some(Handoff::Prepare(dir))) = (several, &options.handoff) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create the handoff directory {}", dir.display()))?;
                }
                let ctx = dependencies::Context {
                    runtime,
                    base_digest: &base.manifest_digest,
                    base_config: &base.config,
                    epoch,
                    options: &options,
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
        let mut requested = Vec::new();
        for (slot, provided) in deps_layers.iter_mut().zip(provided) {
            match provided {
                Provided::Layer(layer) => *slot = Some(*layer),
                Provided::Requested { key } => requested.push(key),
            }
        }
        if !requested.is_empty() {
            return Ok(BuildOutcome::Prepared {
                key: Some(requested.join(",")),
                cache: DependencySummary::none(),
            });
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
        let image = layers::assemble(
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
    let referrers = match opts.sbom || opts.provenance {
        true => {
            let inputs = referrers::Inputs {
                opts,
                runtime: &runtime.name,
                base_location: &base_location,
                bases: &bases,
                libraries: libraries_layer.as_ref(),
                runtime_layer: runtime_layer.as_ref(),
                function_layer: &function_layer,
                dependencies: &deps_layers,
                epoch,
                client: client.as_ref(),
                work: work.path(),
                started: wall_started,
                dependency_files: deps_plan
                    .iter()
                    .flat_map(|p| std::iter::once(p.dependency_file.clone()).chain(p.lock_file.clone()))
                    .collect(),
            };
            referrers::artifacts(&built, &inputs)
                .await
                .context("making the SBOMs and provenance")?
        }
        false => Vec::new(),
    };
    let ctx = WriteContext {
        client: client.as_ref(),
        epoch,
        work: work.path(),
        mount_from: &mount_from,
        referrers: &referrers,
        signer: opts.signing_key.as_deref(),
    };
    let outputs = formats::write(&opts.outputs, &built, &ctx).await?;
    let outputs_time = t.elapsed();

    if let Some(file) = &opts.digest_file {
        std::fs::write(file, built.digest().as_str())
            .with_context(|| format!("cannot write the digest to {}", file.display()))?;
    }

    let (single, platforms) = report::images(
        &built,
        &bases,
        deps_layers,
        libraries_layer.is_some(),
        runtime_layer.is_some(),
    );
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
    // A multi-platform build's prepare step leaves one request per platform, each in its own
    // subdirectory: installed one after the other (the installs share this step's CPU anyway).
    let mut keys = Vec::new();
    for (i, dir) in dependencies::request_dirs(handoff).iter().enumerate() {
        let work = work.path().join(i.to_string());
        std::fs::create_dir_all(&work).context("cannot create a scratch directory")?;
        let key =
            dependencies::install_requested(plan.as_ref(), installer.as_ref(), &runtime, dir, options, &work, step)
                .await
                .with_context(|| format!("installing the dependencies requested in {}", dir.display()))?;
        keys.extend(key);
    }
    Ok((!keys.is_empty()).then(|| keys.join(",")))
}
