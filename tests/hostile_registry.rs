//! Bounded against hostile registries (issue 18, point 1): a registry that sends an endless
//! manifest, lies about a layer's size, trickles a layer at a few bytes a second or serves a base
//! of 10,000 layers gets one clear line and a non-zero exit, with the builder's memory bounded and
//! a stalled transfer abandoned within the minimum-rate window. The registry is a stand-in
//! started here on 127.0.0.1 (a real registry cannot be made to misbehave), serving the real
//! Node 24 test base.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the stand-in misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Misbehaviour {
    /// The manifest is 200 MB, chunked (no Content-Length).
    EndlessManifest,
    /// The layer's descriptor says 1,000 bytes more than the layer has.
    LyingSize,
    /// The layer comes at 100 bytes a second.
    Trickle,
    /// The config comes chunked, 200 MB, though its descriptor says a few hundred bytes.
    EndlessConfig,
    /// A base of 10,000 layers.
    ManyLayers,
}

struct Blobs {
    manifest: Vec<u8>,
    config: (String, Vec<u8>),
    layer: (String, Vec<u8>),
}

fn base_blobs() -> Blobs {
    let layout = base_images().node_layout_for("24");
    let read =
        |digest: &str| std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    Blobs {
        manifest,
        config: (config_digest.clone(), read(&config_digest)),
        layer: (layer_digest.clone(), read(&layer_digest)),
    }
}

/// Starts the stand-in; returns its address.
fn hostile_registry(how: Misbehaviour) -> String {
    let blobs = Arc::new(base_blobs());
    let mut manifest: Value = serde_json::from_slice(&blobs.manifest).unwrap();
    if how == Misbehaviour::LyingSize {
        let size = manifest["layers"][0]["size"].as_u64().unwrap();
        manifest["layers"][0]["size"] = json!(size + 1000);
    }
    if how == Misbehaviour::ManyLayers {
        let layer = manifest["layers"][0].clone();
        manifest["layers"] = json!(vec![layer; 10_000]);
    }
    let config = if how == Misbehaviour::ManyLayers {
        let mut c: Value = serde_json::from_slice(&blobs.config.1).unwrap();
        let id = c["rootfs"]["diff_ids"][0].clone();
        c["rootfs"]["diff_ids"] = json!(vec![id; 10_000]);
        serde_json::to_vec(&c).unwrap()
    } else {
        blobs.config.1.clone()
    };
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config.len());
    let manifest = Arc::new(serde_json::to_vec(&manifest).unwrap());
    let config = Arc::new((config_digest, config));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (blobs, manifest, config) = (blobs.clone(), manifest.clone(), config.clone());
            std::thread::spawn(move || serve(stream, how, &blobs, &manifest, &config));
        }
    });
    addr
}

fn serve(stream: TcpStream, how: Misbehaviour, blobs: &Blobs, manifest: &[u8], config: &(String, Vec<u8>)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        let head = |len: usize, ct: &str| {
            format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n")
        };
        let result = if path == "/v2/" {
            out.write_all(head(2, "application/json").as_bytes())
                .and_then(|_| out.write_all(b"{}"))
        } else if path.contains("/manifests/") {
            if how == Misbehaviour::EndlessManifest {
                endless(&mut out, "application/vnd.oci.image.manifest.v1+json")
            } else {
                out.write_all(head(manifest.len(), "application/vnd.oci.image.manifest.v1+json").as_bytes())
                    .and_then(|_| out.write_all(manifest))
            }
        } else if path.ends_with(&config.0) {
            if how == Misbehaviour::EndlessConfig {
                endless(&mut out, "application/octet-stream")
            } else {
                out.write_all(head(config.1.len(), "application/octet-stream").as_bytes())
                    .and_then(|_| out.write_all(&config.1))
            }
        } else if path.ends_with(&blobs.layer.0) {
            let layer = &blobs.layer.1;
            let r = out.write_all(head(layer.len(), "application/octet-stream").as_bytes());
            if how == Misbehaviour::Trickle {
                r.and_then(|_| {
                    for chunk in layer.chunks(100) {
                        out.write_all(chunk)?;
                        out.flush()?;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Ok(())
                })
            } else {
                r.and_then(|_| out.write_all(layer))
            }
        } else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        };
        if result.is_err() {
            return;
        }
    }
}

/// 200 MB of chunked body, as fast as the client takes it.
fn endless(out: &mut TcpStream, content_type: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..200 {
        write!(out, "{:x}\r\n", chunk.len())?;
        out.write_all(&chunk)?;
        out.write_all(b"\r\n")?;
    }
    out.write_all(b"0\r\n\r\n")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs a build from the stand-in's base into a docker-archive (which needs every layer);
/// returns exit code, stderr, peak RSS in MiB and wall time.
fn build_from(registry: &str, out: &Path) -> (i32, String, u64, Duration) {
    let src = temp_dir("hostile-reg-fn-");
    std::fs::write(src.path().join("handler.js"), "module.exports = { main: () => 'x' };\n").unwrap();
    // GNU time measures the peak RSS of a child it forks itself: a child forked from this test
    // process would carry the test's own memory in its high-water mark.
    let rss_file = src.path().join("rss");
    let t = Instant::now();
    let cmd = fnbuild();
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(cmd.get_program())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg("build")
        .arg(src.path())
        .args([
            "--runtime",
            "nodejs24",
            "--quiet",
            "--base",
            &format!("{registry}/base:24"),
            "--output",
        ])
        .arg(format!("docker-archive:{}", out.display()))
        .arg("--cache-dir")
        .arg(temp_dir("hostile-reg-cache-").path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = t.elapsed();
    let rss_kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    (out.status.code().unwrap_or(-1), stderr, rss_kib / 1024, wall)
}

#[test]
fn hostile_registries_get_one_line_with_memory_and_time_bounded() {
    setup();
    let cases: [(Misbehaviour, &str, &str); 5] = [
        (
            Misbehaviour::EndlessManifest,
            "endless manifest",
            "is larger than 4 MiB",
        ),
        (
            Misbehaviour::EndlessConfig,
            "endless config",
            "bytes its descriptor says",
        ),
        (Misbehaviour::LyingSize, "lying layer size", "its descriptor says"),
        (Misbehaviour::ManyLayers, "10,000 layers", "more than --max-layers 127"),
        (
            Misbehaviour::Trickle,
            "trickled layer",
            "less than the minimum rate of 64 KiB/s",
        ),
    ];
    let mut figures = Vec::new();
    for (how, name, expected) in cases {
        let registry = hostile_registry(how);
        let out = temp_dir("hostile-reg-out-");
        let archive = out.path().join("image.tar");
        let (code, stderr, rss_mib, wall) = build_from(&registry, &archive);
        figures.push(format!(
            "{name}: exit {code}, peak RSS {rss_mib} MiB, {:.1} s",
            wall.as_secs_f64()
        ));
        assert_eq!(code, 1, "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("0 attempts"), "{name}: {stderr}");
        assert!(rss_mib < 64, "{name}: peak RSS {rss_mib} MiB: {stderr}");
        // The minimum-rate window is 20 s: a stalled transfer is given up within it (and a bit).
        assert!(wall < Duration::from_secs(40), "{name}: {wall:?}");
        assert!(!archive.exists(), "{name}: an archive was written");
    }
    eprintln!("{}", figures.join("\n"));
}
