//! A Docker engine (`docker-daemon:NAME:TAG`, `--load`): images exported from it as a base and
//! loaded into it as an output, through a `docker save` archive. The daemon is the one the user
//! means, found as the docker CLI finds it: `DOCKER_HOST` (`unix://` or `tcp://`), else the
//! Docker context named by `DOCKER_CONTEXT` or the CLI config's `currentContext`, else the local
//! socket.

use super::{ReadError, WriteError};
use crate::oci::index::Built;
use crate::oci::platform::Platform;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A daemon connection and where it goes, for messages (`unix:///var/run/docker.sock (the
/// local socket)`).
pub struct Daemon {
    pub docker: bollard::Docker,
    pub endpoint: String,
}

/// Connects (lazily: nothing is sent yet) to the daemon the environment names.
pub fn connect() -> Result<Daemon, String> {
    connect_with(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// [`connect`] with the environment read through `var` (tests give their own).
fn connect_with(var: &dyn Fn(&str) -> Option<String>) -> Result<Daemon, String> {
    let (host, from) = endpoint(var)?;
    if var("DOCKER_TLS_VERIFY").is_some() {
        return Err(format!(
            "{host} ({from}) needs TLS (DOCKER_TLS_VERIFY), which fnbuild does not speak to a daemon; use its unix socket, or write the image with --output docker-archive:FILE and `docker load` it"
        ));
    }
    let docker = match host.split_once("://") {
        Some(("unix", _)) | Some(("tcp", _)) | Some(("http", _)) => {
            bollard::Docker::connect_with_host(&host).map_err(|e| format!("{host} ({from}): {e}"))?
        }
        _ => {
            return Err(format!(
                "{host} ({from}): fnbuild reaches a daemon by unix:// or tcp:// only"
            ))
        }
    };
    Ok(Daemon {
        docker,
        endpoint: format!("{host} ({from})"),
    })
}

/// The daemon's address and what named it.
fn endpoint(var: &dyn Fn(&str) -> Option<String>) -> Result<(String, String), String> {
    if let Some(host) = var("DOCKER_HOST") {
        return Ok((host, "DOCKER_HOST".into()));
    }
    let config_dir = var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let (context, from) = match var("DOCKER_CONTEXT") {
        Some(c) => (Some(c), "DOCKER_CONTEXT"),
        None => {
            let current = config_dir
                .as_ref()
                .and_then(|d| std::fs::read(d.join("config.json")).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["currentContext"].as_str().map(String::from))
                .filter(|c| !c.is_empty());
            (current, "the docker CLI's currentContext")
        }
    };
    match context {
        Some(name) if name != "default" => {
            // The CLI keeps a context's endpoints in contexts/meta/<sha256 of its name>/meta.json.
            let meta = config_dir
                .unwrap_or_default()
                .join("contexts/meta")
                .join(hex::encode(Sha256::digest(name.as_bytes())))
                .join("meta.json");
            let bytes = std::fs::read(&meta)
                .map_err(|e| format!("Docker context '{name}' ({from}): cannot read {}: {e}", meta.display()))?;
            let doc: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("Docker context '{name}' ({from}): {} is not JSON: {e}", meta.display()))?;
            let host = doc["Endpoints"]["docker"]["Host"].as_str().ok_or_else(|| {
                format!(
                    "Docker context '{name}' ({from}): {} names no docker endpoint",
                    meta.display()
                )
            })?;
            Ok((host.to_string(), format!("Docker context '{name}'")))
        }
        _ => Ok(("unix:///var/run/docker.sock".into(), "the local socket".into())),
    }
}

/// Exports `image` from the daemon into the archive `file` (what `docker save` does).
pub async fn export(name: &str, image: &str, file: &Path) -> Result<(), ReadError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let docker_err = |message: String| ReadError::Docker {
        name: name.into(),
        message,
    };
    let read_err = |source| ReadError::Read {
        name: name.into(),
        path: file.into(),
        source,
    };
    let daemon = connect().map_err(docker_err)?;
    let at = |e| format!("{}: {}", daemon.endpoint, message(e));
    let docker = &daemon.docker;
    docker.inspect_image(image).await.map_err(|e| docker_err(at(e)))?;
    let mut out = tokio::fs::File::create(file).await.map_err(read_err)?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| docker_err(at(e)))?;
        out.write_all(&chunk).await.map_err(read_err)?;
    }
    out.flush().await.map_err(read_err)?;
    Ok(())
}

/// Loads the image into the daemon as `name` (what `docker load` does), through an archive in
/// `work`. Of an index, the daemon's own platform's image (a remote engine's may not be this
/// machine's), else the first.
pub async fn load(name: &str, built: &Built, mtime: u64, work: &Path, output: &str) -> Result<(), WriteError> {
    use futures_util::StreamExt;
    let docker_err = |message: String| WriteError::Docker {
        output: output.into(),
        message,
    };
    let daemon = connect().map_err(docker_err)?;
    let at = |e| format!("{}: {}", daemon.endpoint, message(e));
    let docker = &daemon.docker;
    docker.ping().await.map_err(|e| docker_err(at(e)))?;
    let image = match built {
        Built::Image(image) => image,
        Built::Index(_) => {
            let version = docker.version().await.map_err(|e| docker_err(at(e)))?;
            let platform = match (version.os, version.arch) {
                (Some(os), Some(arch)) => Platform::new(&os, &arch, None),
                _ => Platform::host(),
            };
            tracing::debug!(%platform, "the daemon's platform");
            built.image_for(&platform)
        }
    };
    let archive = work.join("docker-load.tar");
    super::archive::write(&archive, Some(name), image, mtime, output)?;
    let file = tokio::fs::File::open(&archive)
        .await
        .map_err(|source| WriteError::Write {
            output: output.into(),
            path: archive.clone(),
            source,
        })?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut replies = docker.import_image_stream(options, body, None);
    while let Some(reply) = replies.next().await {
        reply.map_err(|e| docker_err(at(e)))?;
    }
    Ok(())
}

/// bollard's errors, as one line a person can act on.
fn message(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("{message} (HTTP {status_code})")
        }
        bollard::errors::Error::HyperLegacyError { .. } | bollard::errors::Error::IOError { .. } => {
            format!("cannot reach it ({e}); is dockerd running and DOCKER_HOST right?")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_is_found_as_the_docker_cli_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let name = "remote";
        let meta = dir
            .path()
            .join("contexts/meta")
            .join(hex::encode(Sha256::digest(name.as_bytes())));
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Endpoints":{"docker":{"Host":"tcp://127.0.0.1:2375"}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"currentContext":"remote"}"#).unwrap();
        let config = dir.path().display().to_string();
        let env = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |k: &str| map.get(k).cloned()
        };
        let with_config = |more: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("DOCKER_CONFIG", config.as_str())];
            pairs.extend_from_slice(more);
            env(&pairs)
        };
        assert_eq!(
            endpoint(&with_config(&[])).unwrap(),
            (
                "tcp://127.0.0.1:2375".to_string(),
                "Docker context 'remote'".to_string()
            )
        );
        assert_eq!(
            endpoint(&with_config(&[("DOCKER_CONTEXT", "default")])).unwrap().0,
            "unix:///var/run/docker.sock"
        );
        let err = endpoint(&with_config(&[("DOCKER_CONTEXT", "gone")])).unwrap_err();
        assert!(
            err.starts_with("Docker context 'gone' (DOCKER_CONTEXT): cannot read"),
            "{err}"
        );
        assert_eq!(
            endpoint(&with_config(&[("DOCKER_HOST", "tcp://10.1.2.3:2375")])).unwrap(),
            ("tcp://10.1.2.3:2375".to_string(), "DOCKER_HOST".to_string())
        );
        assert_eq!(endpoint(&env(&[])).unwrap().1, "the local socket");
        let err = connect_with(&env(&[("DOCKER_HOST", "ssh://me@host")])).err().unwrap();
        assert!(err.contains("unix:// or tcp:// only"), "{err}");
        let err = connect_with(&env(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS_VERIFY", "1")]))
            .err()
            .unwrap();
        assert!(err.contains("needs TLS"), "{err}");
    }
}
