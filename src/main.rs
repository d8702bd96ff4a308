//! The `fnbuild` command line. (Over 600 lines: most of it is the clap definitions of every
//! verb's flags with their help texts, which read best in one place.)

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use fnbuild::build::{build, BuildOptions, BuildOutcome};
use fnbuild::cli::{default_cache_dir, is_stdout, usage, LogArgs};
use fnbuild::formats::Location;
use fnbuild::function::dependencies::libraries::{self, LibraryStores};
use fnbuild::function::dependencies::{DependencyOptions, Handoff, InstallStep};
use fnbuild::function::runtime::Runtimes;
use fnbuild::oci::platform::{Platform, Platforms};
use fnbuild::oci::reference::Reference;
use fnbuild::registry::RegistryOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fnbuild",
    version,
    about = "Builds serverless functions into OCI images: no Docker daemon, no Dockerfile, no root",
    long_about = "Builds serverless functions (Kyma-compatible nodejs24, nodejs22, python312 and the deprecated nodejs20 runtimes) \
                  into OCI images: the function's source and the runtime's server are laid over a base image \
                  as new layers, written and compressed by fnbuild itself, and written to registries, \
                  OCI layouts, docker-archive tarballs or the local Docker daemon."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Build a function's source into an image and write it to each output.
    #[command(after_help = "Examples:\n  \
        fnbuild build examples/hello-node --runtime nodejs24 --base oci:bases/node:24 --output oci:out:hello\n  \
        fnbuild build . --runtime python312 --push registry.example.com/fn/hello:v1 --json\n  \
        fnbuild build /src --runtime nodejs24 --push $REGISTRY/ns-fn:$TAG --digest-file /dev/termination-log")]
    Build(BuildArgs),
    /// A build Job's install step: run the installer for what `build --prepare-dependencies`
    /// requested, with no registry credentials in reach, leaving the layer for
    /// `build --installed-dependencies`.
    #[command(after_help = "Example (the three steps of a build Job):\n  \
        fnbuild build /src --runtime nodejs24 --push $IMAGE --cache-repo $CACHE --cache-key-file /key/key --prepare-dependencies /handoff\n  \
        fnbuild install-dependencies /src --runtime nodejs24 --handoff /handoff --npmrc /package-registry/.npmrc\n  \
        fnbuild build /src --runtime nodejs24 --push $IMAGE --cache-repo $CACHE --cache-key-file /key/key --installed-dependencies /handoff")]
    InstallDependencies(InstallArgs),
    /// A build Job's fetch step for a Function from git: one commit of the repository into DIR
    /// (shallow, without its .git), with the credentials only this step holds.
    #[command(after_help = "Example (before the steps of a build Job):\n  \
        fnbuild fetch-source --git-url https://git.example.com/team/fns.git --git-ref 0123abcd... --git-dir hello --git-auth /git-auth /git\n  \
        fnbuild build /git/checkout/hello --runtime nodejs24 --push $IMAGE")]
    FetchSource(fnbuild::git::FetchSourceArgs),
    /// Make the runtimes' library layers (the packages Kyma's runtime images carry, pinned by the
    /// lock files of runtimes/<server>/libraries/) into a store, for a builder image or a builder
    /// without network: `build --runtime-libraries DIR` then downloads nothing.
    #[command(after_help = "Example (what the builder image ships):\n  \
        fnbuild runtime-libraries --output /usr/local/share/fnbuild/runtime-libraries\n  \
        fnbuild runtime-libraries --runtime nodejs24 --output ./libraries --npmrc ~/.npmrc-mirror")]
    RuntimeLibraries(LibrariesArgs),
    /// Print the SBOM attached to an image (`build --sbom`), SPDX or CycloneDX JSON, after checking
    /// that it refers to that image.
    #[command(after_help = "Examples:\n  \
        fnbuild sbom registry.example.com/fn/hello:v1 > hello.spdx.json\n  \
        fnbuild sbom oci:out:hello --format cyclonedx --platform linux/arm64")]
    Sbom(fnbuild::sbom::show::SbomArgs),
    /// Check an image against a public key: its blobs, its cosign signature (and its index's),
    /// each attestation (signed by the key, about this image) and that its SBOMs describe it.
    /// One line per check; exits 1 when any fails.
    #[command(after_help = "Examples:\n  \
        fnbuild verify registry.example.com/fn/hello:v1 --key cosign.pub\n  \
        fnbuild verify registry.example.com/fn/hello:v1 --key cosign.pub --platform linux/arm64 --json")]
    Verify(fnbuild::attest::verify::VerifyArgs),
    /// Write a working hello-world function for a runtime into a new directory.
    #[command(
        after_help = "Examples:\n  fnbuild init --runtime nodejs24 my-function && cd my-function && fnbuild build . --runtime nodejs24 --load my-function:dev\n  \
        fnbuild init --runtime nodejs24 orders --git-url https://github.com/team/functions.git   # also orders/function.yaml"
    )]
    Init(InitArgs),
    /// Print a shell's completion script for fnbuild.
    #[command(after_help = "Examples:\n  \
        source <(fnbuild completions bash)\n  \
        fnbuild completions zsh > \"${fpath[1]}/_fnbuild\"\n  \
        fnbuild completions fish > ~/.config/fish/completions/fnbuild.fish")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print fnbuild's man page (roff), made from the same definitions as --help.
    #[command(after_help = "Example:\n  fnbuild man > fnbuild.1 && man -l fnbuild.1")]
    Man,
    /// Run the Function controller (an alias: runs `fnbuild-controller run` from beside this
    /// binary or from PATH; see `fnbuild-controller run --help`).
    #[command(disable_help_flag = true)]
    Controller(ForwardArgs),
    /// Print the controller's manifests (an alias: runs `fnbuild-controller manifests`).
    #[command(disable_help_flag = true)]
    Manifests(ForwardArgs),
}

#[derive(Args)]
struct InitArgs {
    /// The runtime: nodejs24, nodejs22, python312 or nodejs20 (deprecated in Kyma).
    #[arg(short, long)]
    runtime: String,
    /// The directory to create (it must not exist or be empty).
    dir: PathBuf,
    /// The repository the function will be pushed to: also write `function.yaml`, a Function
    /// that fnbuild's controller builds from there (every push to --git-ref is built).
    #[arg(long, value_name = "URL")]
    git_url: Option<String>,
    /// The branch or tag the Function follows.
    #[arg(long, value_name = "REF", default_value = "main", requires = "git_url")]
    git_ref: String,
    /// The function's directory in the repository (Kyma's baseDir). [default: DIR's name]
    #[arg(long, value_name = "PATH", requires = "git_url")]
    git_dir: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum StepArg {
    All,
    Download,
    Scripts,
}

#[derive(Args)]
struct InstallArgs {
    /// The function's source (as for `build`).
    #[arg(default_value = ".")]
    source_dir: PathBuf,
    /// The runtime (as for `build`).
    #[arg(short, long, env = "FNBUILD_RUNTIME")]
    runtime: String,
    /// Read runtime definitions from this directory instead of the ones compiled in.
    #[arg(long, value_name = "DIR")]
    runtimes_dir: Option<PathBuf>,
    /// The directory `build --prepare-dependencies` wrote its request to; the layer goes there.
    #[arg(long, value_name = "DIR")]
    handoff: PathBuf,
    /// Only part of the install: `download` (with --npmrc / --pip-conf; no package's code runs)
    /// or `scripts` (what follows it, in a container that never has those credentials).
    #[arg(long, value_enum, default_value_t = StepArg::All)]
    step: StepArg,
    /// An .npmrc for the download only (as for `build`).
    #[arg(long, value_name = "FILE")]
    npmrc: Option<PathBuf>,
    /// A pip.conf for the download only (as for `build`).
    #[arg(long, value_name = "FILE")]
    pip_conf: Option<PathBuf>,
}

#[derive(Args)]
struct LibrariesArgs {
    /// The store to write (created if missing): DIR/layers/<key>.blob and .json.
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// A runtime whose libraries to make. Repeatable; default: every runtime that has libraries.
    #[arg(short, long)]
    runtime: Vec<String>,
    /// Read runtime definitions from this directory instead of the ones compiled in.
    #[arg(long, value_name = "DIR")]
    runtimes_dir: Option<PathBuf>,
    /// Take a layer from this store when it has it (copied, checked against its digest) instead
    /// of installing it. Repeatable.
    #[arg(long, value_name = "DIR")]
    from: Vec<PathBuf>,
    /// An .npmrc for the download (a mirror, tokens); never written anywhere.
    #[arg(long, value_name = "FILE")]
    npmrc: Option<PathBuf>,
    /// A pip.conf for the download (a mirror, credentials); never written anywhere.
    #[arg(long, value_name = "FILE")]
    pip_conf: Option<PathBuf>,
    /// Print one JSON object per runtime (runtime, digest, diff_id, size) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BuildArgs {
    /// The function's source: a directory with the handler (handler.js / handler.py) and its
    /// dependency file, or a Kubernetes ConfigMap volume mount (Kyma's `source` and `dependencies` keys work).
    #[arg(default_value = ".")]
    source_dir: PathBuf,
    /// The runtime: nodejs24, nodejs22, python312 or nodejs20 (deprecated in Kyma; or one from --runtimes-dir).
    #[arg(help_heading = "Source", short, long, env = "FNBUILD_RUNTIME")]
    runtime: String,
    /// Read runtime definitions from this directory instead of the ones compiled in.
    #[arg(help_heading = "Source", long, value_name = "DIR")]
    runtimes_dir: Option<PathBuf>,
    /// Base image instead of the runtime's default: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG],
    /// docker-daemon:NAME:TAG, or a registry reference (docker://REF or just REF). fnbuild's
    /// server and entrypoint are laid over it.
    #[arg(help_heading = "Base image", long, value_name = "IMAGE", value_parser = Location::base)]
    base: Option<Location>,
    /// Build on a Kyma-style runtime image (Kyma's spec.runtimeImageOverride), named as --base:
    /// its own server runs (Entrypoint, Cmd, Env, User, WorkingDir kept); fnbuild adds only the
    /// function and its packages where Kyma's images load them (Node: /usr/src/app/function and
    /// its node_modules; Python: /kubeless, packages in /kubeless/lib first on PYTHONPATH).
    #[arg(help_heading = "Base image", long, value_name = "IMAGE", value_parser = Location::base, conflicts_with = "base")]
    runtime_image: Option<Location>,
    /// Write the image to oci:DIR[:TAG] (an OCI image layout; other tags in it are kept),
    /// docker-archive:FILE[:NAME:TAG] (for `docker load`), docker-daemon:NAME:TAG (as --load) or
    /// docker://REF (as --push). Repeatable.
    #[arg(help_heading = "Outputs", short, long, value_name = "OUTPUT", value_parser = Location::output)]
    output: Vec<Location>,
    /// Load the image into the local Docker daemon as NAME:TAG. Repeatable.
    #[arg(help_heading = "Outputs", long, value_name = "NAME:TAG", value_parser = parse_reference)]
    load: Vec<Reference>,
    /// Push the image to a registry as REF (repeat for more tags). Credentials come from
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, or --registry-config.
    #[arg(help_heading = "Outputs", long, value_name = "REF", value_parser = parse_reference)]
    push: Vec<Reference>,
    /// Print one JSON object describing the result on stdout (digest, layers, outputs, timings).
    #[arg(help_heading = "Outputs", long)]
    json: bool,
    /// Also write the manifest digest to this file (a build Job passes /dev/termination-log).
    #[arg(help_heading = "Outputs", long, value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Attach an SBOM to each image: SPDX 2.3 and CycloneDX 1.6 documents of the base (by digest),
    /// the runtime server, the runtime's libraries and the function's dependencies, read from the
    /// layers themselves. They go in as OCI 1.1 referrers (the tag-schema fallback, `sha256-<hex>`,
    /// where the registry has no referrers API) and into OCI layouts; `fnbuild sbom IMAGE` prints them.
    #[arg(help_heading = "Supply chain", long, env = "FNBUILD_SBOM", value_parser = clap::builder::BoolishValueParser::new())]
    sbom: bool,
    /// Attach SLSA v1 provenance to each image: an in-toto Statement in a DSSE envelope naming the
    /// source (directory, or git URL and commit), runtime, base and platform, and by digest the
    /// base manifest, the dependency and lock files and each layer fnbuild wrote. Its start and
    /// finish times are its only fields that differ between two builds of the same input.
    #[arg(help_heading = "Supply chain", long, env = "FNBUILD_PROVENANCE", value_parser = clap::builder::BoolishValueParser::new())]
    provenance: bool,
    /// Sign with this ECDSA P-256 private key (PEM: PKCS#8 as `openssl genpkey` writes, or SEC1;
    /// decrypted): each pushed image, and an index and each of its images, gets a cosign
    /// signature (the `sha256-<hex>.sig` tag `cosign verify --key` reads), and the provenance and
    /// SBOMs become signed DSSE attestations. The key is hidden from the installers and refused
    /// in layers and logs.
    #[arg(help_heading = "Supply chain", long, env = "FNBUILD_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Timestamp for every file and date in the image, in seconds since the epoch (default 1;
    /// at most 253402300799, the last second of 9999).
    #[arg(help_heading = "Metadata", long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(..=fnbuild::build::MAX_EPOCH))]
    source_date_epoch: Option<u64>,
    /// Add a label to the image config. Repeatable.
    #[arg(help_heading = "Metadata", long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    label: Vec<(String, String)>,
    /// Add an annotation to the image manifest (OCI manifests only). Repeatable.
    #[arg(help_heading = "Metadata", long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    annotation: Vec<(String, String)>,
    /// Source repository URL, recorded as org.opencontainers.image.source.
    #[arg(help_heading = "Metadata", long, value_name = "URL")]
    source_url: Option<String>,
    /// Source revision (commit), recorded as org.opencontainers.image.revision.
    #[arg(help_heading = "Metadata", long, value_name = "REV")]
    revision: Option<String>,
    /// The platform to build for, taken from a multi-platform base (default: linux on this
    /// machine's architecture). Several, separated by commas, make an image index with one
    /// image per platform, each with its own dependencies; `all`: every platform of the base
    /// that functions run on (linux/amd64, linux/arm64).
    #[arg(help_heading = "Base image", long, value_name = "OS/ARCH[/VARIANT],...|all")]
    platform: Option<Platforms>,
    /// A docker config.json to take registry credentials from.
    #[arg(help_heading = "Registry", long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
    /// Allow plain HTTP (and unverified TLS) for this registry (HOST[:PORT]); loopback registries need no flag. Repeatable, or HOST,HOST.
    #[arg(help_heading = "Registry", long, value_name = "HOST[:PORT]", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// The slowest a blob may come from or go to a registry, in KiB/s, judged over 20 s: a
    /// download below it is abandoned (a stalled or trickling registry), an upload's deadline
    /// allows it. 0: no floor.
    #[arg(help_heading = "Registry", long, value_name = "KIB_PER_S", default_value_t = 64)]
    min_transfer_rate: u64,
    /// The most layers the image may have, base included (container runtimes refuse about 128).
    #[arg(help_heading = "Registry", long, value_name = "N", default_value_t = 127, value_parser = clap::value_parser!(u32).range(1..))]
    max_layers: u32,
    /// Trust this PEM CA bundle for registries (private CAs). Repeatable.
    #[arg(help_heading = "Registry", long, value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
    /// Cache directory: dependency layers (by key), unchanged layers, base manifests and configs
    /// (default: $XDG_CACHE_HOME/fnbuild or ~/.cache/fnbuild).
    #[arg(help_heading = "Cache", long, env = "FNBUILD_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Also keep dependency layers in this registry repository (each a one-layer image tagged by
    /// its key), shared by every builder that can reach it; pushes to that registry mount them.
    #[arg(help_heading = "Cache", long, env = "FNBUILD_CACHE_REPO", value_name = "REGISTRY/REPOSITORY", value_parser = parse_repository)]
    cache_repo: Option<Reference>,
    /// The key that signs and verifies --cache-repo entries (a file with a secret shared by the
    /// builders; HMAC-SHA256): entries without a valid signature are not used. Needed with --cache-repo.
    #[arg(help_heading = "Cache", long, env = "FNBUILD_CACHE_KEY_FILE", value_name = "FILE")]
    cache_key_file: Option<PathBuf>,
    /// Install the dependencies afresh even if a cache has them (the caches are refreshed).
    #[arg(help_heading = "Cache", long)]
    no_cache: bool,
    /// A store of runtime library layers (from `fnbuild runtime-libraries`), searched first and
    /// where a layer made here is kept (default: the store shipped beside fnbuild, then the cache
    /// directory; a missing layer is installed once, from the npm registry or PyPI).
    #[arg(
        help_heading = "Dependencies",
        long,
        env = "FNBUILD_RUNTIME_LIBRARIES",
        value_name = "DIR"
    )]
    runtime_libraries: Option<PathBuf>,
    /// A build Job's first step: resolve the base image and ask the dependency caches, push
    /// nothing and run no installer; when the dependencies must be installed, write the request
    /// into DIR for `fnbuild install-dependencies`.
    #[arg(
        help_heading = "Dependencies",
        long,
        value_name = "DIR",
        conflicts_with = "installed_dependencies"
    )]
    prepare_dependencies: Option<PathBuf>,
    /// A build Job's last step: never run an installer; a dependency layer that no cache has is
    /// taken from DIR, where `fnbuild install-dependencies` left it (its digests are checked).
    #[arg(help_heading = "Dependencies", long, value_name = "DIR")]
    installed_dependencies: Option<PathBuf>,
    /// An .npmrc for `npm` during the install only (private registries, tokens); never copied
    /// into the image, the cache or the log.
    #[arg(help_heading = "Dependencies", long, value_name = "FILE")]
    npmrc: Option<PathBuf>,
    /// A pip.conf for `pip` during the install only (private indexes, credentials); never copied
    /// into the image, the cache or the log.
    #[arg(help_heading = "Dependencies", long, value_name = "FILE")]
    pip_conf: Option<PathBuf>,
    #[command(flatten)]
    git: fnbuild::git::GitArgs,
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    s.parse::<Reference>().map_err(|e| e.to_string())
}
/// `REGISTRY/REPOSITORY`, without a tag or digest (the cache picks the tags).
fn parse_repository(s: &str) -> Result<Reference, String> {
    let last = s.rsplit('/').next().unwrap_or(s);
    if s.contains('@') || (s.contains('/') && last.contains(':')) {
        return Err(format!(
            "'{s}': give a repository without a tag or digest, e.g. registry.example.com/team/fnbuild-cache"
        ));
    }
    s.parse::<Reference>()
        .map(|r| r.with_repository(r.repository.clone()))
        .map_err(|e| e.to_string())
}

/// A credentials file the installer will read: it must be readable now; made absolute.
fn credentials_file(flag: &str, path: Option<PathBuf>) -> Result<Option<PathBuf>> {
    let Some(path) = path else { return Ok(None) };
    std::fs::File::open(&path).with_context(|| format!("cannot read the {flag} file {}", path.display()))?;
    Ok(Some(
        std::path::absolute(&path).with_context(|| format!("{flag} {}", path.display()))?,
    ))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}': write KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    // git or ssh asking for a credential of a --git-auth fetch.
    if let Some(code) = fnbuild::git::askpass::answer_if_asked() {
        return code;
    }
    let cli = Cli::parse();
    // Made from the definitions, before anything else starts.
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "fnbuild", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let command = match cli.command {
        Command::Controller(args) => return forward_to_controller("run", &cli.log, args),
        Command::Manifests(args) => return forward_to_controller("manifests", &cli.log, args),
        other => other,
    };
    cli.log.init(None);
    // A build is mostly waiting on the registry and the disk, its CPU work runs on blocking
    // threads: one thread drives it, so there are no worker threads to start and stop.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Build(args) => run_build(args).await,
            Command::InstallDependencies(args) => run_install(args).await,
            Command::FetchSource(args) => fnbuild::git::fetch_source(&args),
            Command::RuntimeLibraries(args) => run_libraries(args).await,
            Command::Sbom(args) => fnbuild::sbom::show::run(args).await,
            Command::Verify(args) => fnbuild::attest::verify::run(args).await,
            Command::Init(args) => {
                let git = args.git_url.map(|url| fnbuild::init::GitHome {
                    url,
                    reference: args.git_ref,
                    dir: args.git_dir,
                });
                for file in fnbuild::init::init(&Runtimes::Embedded, &args.runtime, &args.dir, git.as_ref())? {
                    println!("{}", file.display());
                }
                Ok(())
            }
            Command::Controller(_) | Command::Manifests(_) | Command::Completions { .. } | Command::Man => {
                unreachable!("answered above")
            }
        }
    });
    fnbuild::cli::exit(fnbuild::cli::report(result))
}

/// The arguments of a command that another program carries out.
#[derive(Args)]
struct ForwardArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

/// `fnbuild controller|manifests ...`: the spelling of the days when both were one program,
/// kept working by running `fnbuild-controller` (beside this binary, else on PATH) in its place.
/// The log options given before the verb go along.
fn forward_to_controller(verb: &str, log: &LogArgs, args: ForwardArgs) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("fnbuild-controller")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("fnbuild-controller"));
    let mut cmd = std::process::Command::new(&program);
    cmd.arg(verb).args(log.as_args()).args(args.args);
    let err = cmd.exec();
    eprintln!(
        "error: `fnbuild {}` is `fnbuild-controller {verb}` now, and {} cannot be run: {err}",
        if verb == "run" { "controller" } else { verb },
        program.display()
    );
    ExitCode::from(2)
}

async fn run_build(args: BuildArgs) -> Result<()> {
    let mut outputs = args.output;
    outputs.extend(
        args.load
            .into_iter()
            .map(|r| Location::DockerDaemon { name: r.to_string() }),
    );
    outputs.extend(args.push.into_iter().map(Location::Registry));
    if outputs.is_empty() && args.prepare_dependencies.is_none() {
        tracing::warn!("no --output, --load or --push: the image is built and then discarded");
    }
    if args.cache_repo.is_some() && args.cache_key_file.is_none() {
        return Err(usage(
            "--cache-repo needs --cache-key-file FILE: a secret shared by the builders, with which cache entries are signed (an entry without a valid signature is never used)",
        ));
    }
    let cache_dir = args.cache_dir.or_else(default_cache_dir);
    let cache_signing_key = match &args.cache_key_file {
        Some(f) => Some(read_cache_key(f)?),
        None => None,
    };
    let mut dependencies = DependencyOptions {
        npmrc: credentials_file("--npmrc", args.npmrc)?,
        pip_conf: credentials_file("--pip-conf", args.pip_conf)?,
        cache_dir: cache_dir.clone(),
        cache_repo: args.cache_repo,
        no_cache: args.no_cache,
        cache_signing_key,
        hide: Vec::new(),
        handoff: match (args.prepare_dependencies, args.installed_dependencies) {
            (Some(d), _) => Some(Handoff::Prepare(d)),
            (_, Some(d)) => Some(Handoff::Installed(d)),
            _ => None,
        },
    };
    dependencies.hide = guard_secrets(
        args.registry_config.as_deref(),
        &[args.cache_key_file.as_deref(), args.sign_key.as_deref()],
        cache_dir.as_deref(),
        &dependencies,
    )?;
    let signing_key = match &args.sign_key {
        Some(f) => Some(std::sync::Arc::new(
            fnbuild::attest::keys::SigningKey::from_file(f).context("--sign-key")?,
        )),
        None => None,
    };
    // --git-url: one commit fetched into a directory of its own, removed when the build ends.
    let git_work = tempfile::Builder::new()
        .prefix("fnbuild-git-")
        .tempdir()
        .context("cannot make a directory for the git checkout")?;
    let (source_dir, source_url, revision) = match args.git.request()? {
        Some(req) => {
            if args.source_dir != std::path::Path::new(".") {
                return Err(usage("give the source as a directory or as --git-url, not both"));
            }
            let t = std::time::Instant::now();
            let work = git_work.path().to_path_buf();
            let f = tokio::task::spawn_blocking(move || fnbuild::git::fetch(&req, &work))
                .await
                .context("the git fetch stopped")??;
            tracing::info!(url = %f.url, commit = %f.commit, ms = t.elapsed().as_millis() as u64, "fetched");
            (
                f.source_dir,
                args.source_url.or(Some(f.url)),
                args.revision.or(Some(f.commit)),
            )
        }
        None => (args.source_dir, args.source_url, args.revision),
    };
    let mut libraries = LibraryStores::standard(args.runtime_libraries, cache_dir.as_deref());
    // The steps of a build Job hold the registry credentials and run no installer.
    libraries.offline = dependencies.handoff.is_some();
    let opts = BuildOptions {
        source_dir,
        runtime: args.runtime,
        runtimes: args.runtimes_dir.map_or(Runtimes::Embedded, Runtimes::Disk),
        runtime_image: args.runtime_image.is_some(),
        base: args.base.or(args.runtime_image),
        outputs,
        source_date_epoch: args.source_date_epoch,
        labels: args.label,
        annotations: args.annotation,
        source_url,
        revision,
        registry: RegistryOptions {
            insecure_registries: args.insecure_registry,
            ca_certs: args.ca_cert,
            min_rate: args.min_transfer_rate.saturating_mul(1024),
            registry_config: args.registry_config,
            platform: match &args.platform {
                Some(Platforms::One(p)) => p.clone(),
                _ => Platform::host(),
            },
            cache_dir,
            ..Default::default()
        },
        platforms: args.platform.unwrap_or_default(),
        digest_file: args.digest_file,
        sbom: args.sbom,
        provenance: args.provenance,
        signing_key,
        max_layers: args.max_layers as usize,
        libraries,
        dependencies,
    };
    // `--output docker-archive:/dev/stdout | docker load`: stdout carries the archive, nothing else.
    let to_stdout = opts
        .outputs
        .iter()
        .any(|o| matches!(o, Location::DockerArchive { file, .. } if is_stdout(file)));
    if to_stdout && args.json {
        return Err(usage(
            "--json and an output to stdout both want stdout: write the archive to a file, or leave out --json",
        ));
    }
    let json = match build(&opts).await? {
        BuildOutcome::Built(result) => {
            if to_stdout {
                tracing::info!(digest = %result.digest, "built");
                return Ok(());
            }
            if !args.json {
                println!("{}", result.digest);
                return Ok(());
            }
            serde_json::to_string(&result)
        }
        BuildOutcome::Prepared { key, cache } => {
            match &key {
                Some(k) => tracing::info!(key = %k, "the dependencies must be installed: request written"),
                None => tracing::info!("nothing to install"),
            }
            if !args.json {
                println!(
                    "{}",
                    if key.is_some() {
                        "install requested"
                    } else {
                        "nothing to install"
                    }
                );
                return Ok(());
            }
            serde_json::to_string(&serde_json::json!({"install_requested": key, "dependencies": cache}))
        }
    };
    println!("{}", json.context("cannot print the result")?);
    Ok(())
}

async fn run_libraries(args: LibrariesArgs) -> Result<()> {
    let mut dependencies = DependencyOptions {
        npmrc: credentials_file("--npmrc", args.npmrc)?,
        pip_conf: credentials_file("--pip-conf", args.pip_conf)?,
        ..Default::default()
    };
    dependencies.hide = guard_secrets(None, &[], default_cache_dir().as_deref(), &dependencies)?;
    let runtimes = args.runtimes_dir.map_or(Runtimes::Embedded, Runtimes::Disk);
    let made = libraries::make_store(
        &runtimes,
        &args.runtime,
        &args.output,
        &args.from,
        dependencies.npmrc.as_deref(),
        dependencies.pip_conf.as_deref(),
        &dependencies.hide,
    )
    .await?;
    for (runtime, layer) in made {
        if args.json {
            let line = serde_json::json!({"runtime": runtime, "digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size});
            println!("{line}");
        } else {
            println!("{runtime:<12} {} {:.1} MB", layer.digest, layer.size as f64 / 1e6);
        }
    }
    Ok(())
}

async fn run_install(args: InstallArgs) -> Result<()> {
    let mut dependencies = DependencyOptions {
        npmrc: credentials_file("--npmrc", args.npmrc)?,
        pip_conf: credentials_file("--pip-conf", args.pip_conf)?,
        ..Default::default()
    };
    dependencies.hide = guard_secrets(None, &[], default_cache_dir().as_deref(), &dependencies)?;
    let runtimes = args.runtimes_dir.map_or(Runtimes::Embedded, Runtimes::Disk);
    let step = match args.step {
        StepArg::All => InstallStep::All,
        StepArg::Download => InstallStep::Download,
        StepArg::Scripts => InstallStep::Scripts,
    };
    let key = fnbuild::build::install_dependencies(
        &args.source_dir,
        &args.runtime,
        &runtimes,
        &args.handoff,
        &dependencies,
        step,
    )
    .await?;
    match key {
        Some(k) if matches!(step, InstallStep::Download) => println!("downloaded {k}"),
        Some(k) => println!("installed {k}"),
        None => println!("nothing to install"),
    }
    Ok(())
}

/// Gets the build's credentials known before anything runs: every form of them is scrubbed
/// from logs and errors and refused in layers from now on, and this process's memory and
/// environment are closed to the installer's scripts. Returns what the installer must not see.
fn guard_secrets(
    registry_config: Option<&std::path::Path>,
    key_files: &[Option<&std::path::Path>],
    cache_dir: Option<&std::path::Path>,
    deps: &DependencyOptions,
) -> Result<Vec<PathBuf>> {
    fnbuild::function::dependencies::protect_this_process();
    for s in fnbuild::secrets::environment_secrets() {
        fnbuild::secrets::register(&s);
    }
    let mut hide: Vec<PathBuf> = Vec::new();
    let docker_dir = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from);
    let home_docker = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"));
    let configs = [
        registry_config.map(PathBuf::from),
        docker_dir.as_ref().map(|d| d.join("config.json")),
        home_docker.as_ref().map(|d| d.join("config.json")),
    ];
    for config in configs.iter().flatten() {
        if let Ok(bytes) = std::fs::read(config) {
            for s in fnbuild::secrets::docker_config_secrets(&bytes) {
                fnbuild::secrets::register(&s);
            }
        }
    }
    hide.extend(configs.into_iter().flatten());
    hide.extend(docker_dir);
    hide.extend(home_docker);
    // The cache's HMAC key and the signing key: the whole file, and each line of a PEM body.
    for key in key_files.iter().flatten() {
        if let Ok(bytes) = std::fs::read(key) {
            let text = String::from_utf8_lossy(&bytes);
            fnbuild::secrets::register(text.trim());
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            {
                fnbuild::secrets::register(line);
            }
        }
        hide.push(key.to_path_buf());
    }
    hide.extend(cache_dir.map(PathBuf::from));
    // Registers the values of the package-registry credentials files.
    fnbuild::function::dependencies::Redactor::from_files(&[
        ("--npmrc", deps.npmrc.as_deref()),
        ("--pip-conf", deps.pip_conf.as_deref()),
    ])?;
    Ok(hide)
}

/// A --cache-key-file's key: its bytes, trimmed; at least 16 of them.
fn read_cache_key(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the --cache-key-file {}", path.display()))?;
    let key = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
    if key.len() < 16 {
        anyhow::bail!(
            "the --cache-key-file {} holds {} bytes; a signing key needs at least 16 (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}
