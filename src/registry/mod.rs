//! OCI distribution client: auth, blobs, manifests, retries (decided in `retry.rs`).
//!
//! One [`Client`] serves any number of registries; it keeps one connection pool, the detected
//! scheme and the credentials/tokens per registry, and is cheap to clone.
//!
//! Push order guarantees that nothing references a blob the registry lacks: every blob is
//! confirmed present (HEAD), mounted (201) or uploaded (201 with the registry checking the
//! digest) before the manifest is put by digest, and tags come after the manifest.

// From the bottom up: stats, error, auth and known use none of the others; connection (which
// client, which host) comes next, then retry (the one retry policy), ping and token, send, then
// pull, sessions, upload and push, and this module's Client on top.
pub(crate) mod auth;
mod connection;
pub(crate) mod error;
mod known;
mod ping;
mod pull;
mod push;
mod referrers;
mod retry;
mod send;
mod sessions;
mod stats;
mod token;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::oci::platform::Platform;
pub use connection::{is_loopback, resolve_location};
pub use error::{ErrorCode, RegistryError};
pub use referrers::AttachReport;
pub use retry::RetryPolicy;
pub use sessions::PushForecast;

use crate::oci::reference::Reference;

/// The manifest media types the registry client reads (defined once, in the image model).
pub use crate::oci::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`HOST[:PORT]`, or `HOST` for any port) that may be reached over plain HTTP
    /// or with certificates that do not verify. Loopback registries may use plain HTTP anyway.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA bundles to trust (private CAs).
    pub ca_certs: Vec<PathBuf>,
    /// A docker `config.json` to take credentials from; default `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`.
    pub registry_config: Option<PathBuf>,
    /// Where manifests (by digest) and configs are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The platform to pick from image indexes.
    pub platform: Platform,
    /// Retry budget for each step.
    pub retry: RetryPolicy,
    /// Time allowed for one small request (manifests, HEAD, POST, tokens), body included.
    pub request_timeout: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Blob operations run at once during a push.
    pub parallelism: usize,
    /// The slowest transfer of a blob, in bytes per second, kept up for [`RATE_WINDOW`]: below
    /// it a download is abandoned, and an upload's deadline allows this rate. 0: no floor.
    pub min_rate: u64,
}

/// The stretch of a download over which [`RegistryOptions::min_rate`] is judged.
pub const RATE_WINDOW: Duration = Duration::from_secs(20);

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            ca_certs: Vec::new(),
            registry_config: None,
            cache_dir: None,
            platform: Platform::host(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            parallelism: 4,
            min_rate: 64 * 1024,
        }
    }
}

/// One platform's image manifest, resolved from a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledManifest {
    /// Digest of `bytes`.
    pub digest: String,
    /// `OCI_MANIFEST` or `DOCKER_MANIFEST`.
    pub media_type: String,
    /// The manifest exactly as the registry serves it.
    pub bytes: Vec<u8>,
    /// The index / manifest list it was picked from, if any.
    pub index_digest: Option<String>,
}

/// A blob to push.
#[derive(Debug, Clone)]
pub struct PushBlob {
    pub digest: String,
    pub size: u64,
    pub source: BlobSource,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A file holding exactly the blob (e.g. a spooled, compressed layer).
    File(PathBuf),
    /// The blob in memory (configs, small layers).
    Bytes(Vec<u8>),
    /// A repository where the blob already lives, on this or another registry: mounted when
    /// it is the same registry, else streamed GET→PUT without touching the disk.
    Registry(Reference),
}

/// The manifest to push after the blobs.
#[derive(Debug, Clone)]
pub struct PushManifest {
    pub bytes: Vec<u8>,
    /// Sent as `Content-Type`; must equal the manifest's `mediaType`.
    pub media_type: String,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The target repository already had it.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded from a file or memory.
    Uploaded,
    /// Streamed from another registry (or from another repository when mounting failed).
    Copied,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Digest of the pushed manifest.
    pub digest: String,
    /// HTTP requests made (every attempt and redirect hop counts).
    pub requests: u64,
    /// Blob bytes sent, retries included.
    pub bytes_uploaded: u64,
    /// Each blob's digest and outcome, in the order given.
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Progress of a push, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum PushEvent {
    /// A blob's turn has come.
    BlobStarted { digest: String, size: u64 },
    /// Bytes of a blob sent so far in the current attempt.
    BlobProgress { digest: String, sent: u64, size: u64 },
    /// A blob is in the target repository.
    BlobDone { digest: String, outcome: BlobOutcome },
    /// The manifest is in, by digest.
    ManifestPushed { digest: String },
    /// A tag now points at the manifest.
    Tagged { reference: String },
}

/// A progress callback (called from several tasks; keep it quick).
pub type ProgressFn = Arc<dyn Fn(&PushEvent) + Send + Sync>;

/// An OCI distribution client. Clones share connection pools, credentials and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<connection::Inner>,
    prepared: Arc<sessions::PreparedPushes>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Set up a client (reads CA bundles now; credentials are read on first need).
    pub fn new(opts: RegistryOptions) -> Result<Client, RegistryError> {
        if opts.parallelism == 0 {
            return Err(RegistryError::InvalidOptions("parallelism must be at least 1".into()));
        }
        Ok(Client {
            inner: Arc::new(connection::Inner::new(opts)?),
            prepared: Arc::default(),
        })
    }

    /// The options this client was made with.
    pub fn options(&self) -> &RegistryOptions {
        &self.inner.opts
    }

    /// HTTP requests made by this client so far (all operations).
    pub fn total_requests(&self) -> u64 {
        self.inner.totals.requests()
    }

    /// Resolve a reference to one image manifest for `options().platform`, following an OCI
    /// index / Docker manifest list. Manifests fetched by digest are cached under `cache_dir`.
    pub async fn pull_manifest(&self, r: &Reference) -> Result<PulledManifest, RegistryError> {
        pull::pull_manifest(&self.inner, r, &self.inner.opts.platform).await
    }

    /// The platforms of the index `r` names, or `None` when it names one image.
    pub async fn index_platforms(&self, r: &Reference) -> Result<Option<Vec<Platform>>, RegistryError> {
        pull::index_platforms(&self.inner, r).await
    }

    /// Like [`Client::pull_manifest`] for another platform than the client's.
    pub async fn pull_manifest_for(&self, r: &Reference, platform: &Platform) -> Result<PulledManifest, RegistryError> {
        pull::pull_manifest(&self.inner, r, platform).await
    }

    /// Fetch a small blob (a config) into memory, verifying its digest; cached under `cache_dir`.
    /// `size` is the descriptor's: a blob of another size is refused.
    pub async fn fetch_blob(&self, r: &Reference, digest: &str, size: u64) -> Result<Vec<u8>, RegistryError> {
        pull::fetch_blob(&self.inner, r, digest, size).await
    }

    /// Stream a blob of any size into `dest` (replaced atomically), verifying its digest and
    /// that it is `size` bytes (the descriptor's), at no less than the minimum rate.
    pub async fn download_blob(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
        dest: &std::path::Path,
    ) -> Result<u64, RegistryError> {
        pull::download_blob(&self.inner, r, digest, size, dest).await
    }

    /// Whether the repository of `r` has the blob.
    pub async fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool, RegistryError> {
        pull::blob_exists(&self.inner, r, digest).await
    }

    /// Tells the client, while the image is still being made, what a push to `target` will
    /// carry; when that shows new blobs, it starts opening their upload sessions now, and the
    /// push to that repository uses them and the record it read (see `sessions.rs`). Needs a
    /// Tokio runtime.
    pub fn prepare_push(&self, target: &Reference, forecast: PushForecast) {
        let prepared = sessions::PreparedPush::new(&self.inner, target, forecast);
        self.prepared.keep(target, prepared);
    }

    /// Push blobs (existence check, then mount-or-upload; a few at once), then the manifest
    /// by digest, then each tag of `targets` (all of one registry and repository).
    pub async fn push(
        &self,
        targets: &[Reference],
        blobs: Vec<PushBlob>,
        manifest: PushManifest,
        progress: Option<ProgressFn>,
    ) -> Result<PushReport, RegistryError> {
        push::push(&self.inner, &self.prepared, targets, blobs, &[], manifest, progress).await
    }

    /// Attaches `artifacts` to their subjects (images already in `repo`): as referrers, or, on
    /// a registry without the referrers API, through each subject's fallback tag.
    pub async fn attach(
        &self,
        repo: &Reference,
        artifacts: &[crate::oci::referrers::Artifact],
    ) -> Result<AttachReport, RegistryError> {
        referrers::attach(&self.inner, &self.prepared, repo, artifacts).await
    }

    /// Adds a cosign signature of `subject` to its signature image in `repo` (tag
    /// `sha256-<hex>.sig`), keeping the others there; the HTTP requests it took.
    pub async fn sign(
        &self,
        repo: &Reference,
        subject: &crate::oci::digest::Digest,
        signature: &crate::attest::cosign::Signature,
    ) -> Result<u64, RegistryError> {
        referrers::sign(&self.inner, &self.prepared, repo, subject, signature).await
    }

    /// The artifacts that refer to `subject` in `repo`: digest and artifact type.
    pub async fn referrers(
        &self,
        repo: &Reference,
        subject: &crate::oci::digest::Digest,
    ) -> Result<Vec<(crate::oci::digest::Digest, String)>, RegistryError> {
        referrers::list(&self.inner, repo, subject).await
    }

    /// The document of the artifact `artifact` (an SBOM, an attestation), which must refer to
    /// `subject`, its bytes checked against their digests.
    pub async fn referrer_document(
        &self,
        repo: &Reference,
        artifact: &crate::oci::digest::Digest,
        subject: &crate::oci::digest::Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        referrers::document(&self.inner, repo, artifact, subject).await
    }

    /// One manifest exactly as the registry has it under `reference` (a tag or digest), with
    /// its media type and digest; an index is not resolved.
    pub async fn raw_manifest(
        &self,
        repo: &Reference,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String), RegistryError> {
        let stats = std::sync::Arc::new(stats::Stats::default());
        let c = self.inner.counter(&stats);
        let conn = self.inner.conn(&repo.registry, repo.api_host());
        pull::get_manifest(&self.inner, &conn, repo, reference, &c).await
    }

    /// Like [`Client::push`] for an index: `children` (the manifests it lists) go in by digest
    /// after the blobs and before the index, which takes the tags.
    pub async fn push_with_children(
        &self,
        targets: &[Reference],
        blobs: Vec<PushBlob>,
        children: Vec<PushManifest>,
        manifest: PushManifest,
        progress: Option<ProgressFn>,
    ) -> Result<PushReport, RegistryError> {
        push::push(
            &self.inner,
            &self.prepared,
            targets,
            blobs,
            &children,
            manifest,
            progress,
        )
        .await
    }
}

pub use crate::oci::digest::sha256_digest;

/// The digest of `bytes` with the algorithm of `like` (sha256 or sha512).
pub(crate) fn digest_like(like: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    if like.starts_with("sha512:") {
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
    } else {
        sha256_digest(bytes)
    }
}

/// Incremental digest with the algorithm of `like`.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn like(digest: &str) -> Hasher {
        use sha2::Digest;
        if digest.starts_with("sha512:") {
            Hasher::Sha512(sha2::Sha512::new())
        } else {
            Hasher::Sha256(sha2::Sha256::new())
        }
    }
    pub fn update(&mut self, b: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    pub fn finish(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The media type a manifest declares, or the one its shape implies.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(mt.to_string());
    }
    if v.get("manifests").is_some() {
        Some(OCI_INDEX.to_string())
    } else if v.get("config").is_some() {
        Some(OCI_MANIFEST.to_string())
    } else {
        None
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_media_types() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::like("sha256:x");
        h.update(b"a");
        h.update(b"b");
        assert_eq!(h.finish(), sha256_digest(b"ab"));
        assert!(digest_like("sha512:", b"").starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(sniff_media_type(br#"{"mediaType":"x"}"#).as_deref(), Some("x"));
        assert_eq!(sniff_media_type(br#"{"manifests":[]}"#).as_deref(), Some(OCI_INDEX));
        assert_eq!(sniff_media_type(br#"{"config":{}}"#).as_deref(), Some(OCI_MANIFEST));
        assert_eq!(sniff_media_type(b"nope"), None);
    }

    #[test]
    fn client_options() {
        let c = Client::new(RegistryOptions::default()).unwrap();
        assert_eq!(c.options().parallelism, 4);
        assert!(Client::new(RegistryOptions {
            parallelism: 0,
            ..Default::default()
        })
        .is_err());
        let err = Client::new(RegistryOptions {
            registry_config: Some("/nonexistent/fnbuild/config.json".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/fnbuild/config.json"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a cert").unwrap();
        let err = Client::new(RegistryOptions {
            ca_certs: vec![bad],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
