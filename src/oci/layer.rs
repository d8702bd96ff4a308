//! Writes one image layer in a single streaming pass: entries → tar → parallel gzip → spool file,
//! hashing the uncompressed tar (the diffID) and the compressed blob (the digest) on the way.
//!
//! Everything that reaches the tar stream is decided here, so the bytes depend only on the entries
//! and the timestamp: entries sorted by path, every header field set, no user or group names,
//! gzip blocks of a fixed size whatever the number of cores.

use super::digest::{Digest, HashingWriter};
use super::gzip::ParallelGzip;
use crate::secrets::{ScanStream, Scanner};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// pigz's default level: the benchmark compares against `pigz -p 2` at the same level.
pub const COMPRESSION_LEVEL: u32 = 6;
/// Largest size a ustar header can state in octal; bigger files also get a PAX `size` record.
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

#[derive(Debug, Clone)]
pub enum Content {
    /// A file on disk, read when the layer is written.
    Path(PathBuf),
    /// Bytes in memory (runtime files compiled into the binary, generated files).
    Bytes(Cow<'static, [u8]>),
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    File { content: Content, executable: bool },
    Symlink { target: String },
}

/// One entry of a layer; `path` is relative to the image root, without leading or trailing `/`.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub path: String,
    pub kind: EntryKind,
}

/// A layer written to its spool file.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub file: PathBuf,
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} changed size while it was being read; build again when the source is settled")]
    Changed { path: PathBuf },
    #[error("two entries for the same path {0} in one layer")]
    Duplicate(String),
    #[error("cannot write layer file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} holds one of this build's credentials (a registry or package-registry secret); refusing to put it into an image")]
    Secret { path: String },
}

/// Writes `entries` as a gzip-compressed tar to `spool` and returns its digests.
/// `mtime` is stamped on every entry (seconds since the epoch).
pub fn write_layer(entries: Vec<LayerEntry>, mtime: u64, spool: &Path) -> Result<WrittenLayer, LayerError> {
    write_layer_at(entries, mtime, spool, COMPRESSION_LEVEL)
}

/// [`write_layer`] at gzip `level` (1-9).
pub fn write_layer_at(
    entries: Vec<LayerEntry>,
    mtime: u64,
    spool: &Path,
    level: u32,
) -> Result<WrittenLayer, LayerError> {
    write_layer_scanned(entries, mtime, spool, level, &Scanner::for_registered())
}

/// [`write_layer_at`], refusing any entry whose name, link target or content holds what
/// `scanner` looks for (the build's credentials, in any of their encodings).
pub fn write_layer_scanned(
    mut entries: Vec<LayerEntry>,
    mtime: u64,
    spool: &Path,
    level: u32,
    scanner: &Scanner,
) -> Result<WrittenLayer, LayerError> {
    // Byte order of the paths puts every directory before what it contains.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(LayerError::Duplicate(w[0].path.clone()));
    }
    let mut tar = tar::Builder::new(LayerWriter::create_at(spool, level)?);
    for entry in &entries {
        append_entry(&mut tar, entry, mtime, scanner)?;
    }
    let writer = tar.into_inner().map_err(|source| LayerError::Write {
        path: spool.into(),
        source,
    })?;
    writer.finish()
}

/// Compresses an existing uncompressed tar (a layer from `docker save`) into a layer blob.
pub fn compress_tar(tar: &mut impl Read, spool: &Path) -> Result<WrittenLayer, LayerError> {
    let mut writer = LayerWriter::create(spool)?;
    io::copy(tar, &mut writer).map_err(|source| LayerError::Write {
        path: spool.into(),
        source,
    })?;
    writer.finish()
}

/// The cores to compress on (at most 8). Asked once: the standard library reads the cgroup
/// files again on every call, and a build writes several layers.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

/// The uncompressed side of a layer blob: bytes written here are hashed (diffID), gzip-compressed
/// in fixed-size blocks on every core, hashed again (digest) and spooled to a file.
pub struct LayerWriter {
    spool: PathBuf,
    inner: HashingWriter<ParallelGzip<HashingWriter<BufWriter<File>>>>,
}

impl LayerWriter {
    pub fn create(spool: &Path) -> Result<LayerWriter, LayerError> {
        LayerWriter::create_at(spool, COMPRESSION_LEVEL)
    }

    pub fn create_at(spool: &Path, level: u32) -> Result<LayerWriter, LayerError> {
        let write_err = |source: io::Error| LayerError::Write {
            path: spool.to_path_buf(),
            source,
        };
        let file = File::create(spool).map_err(write_err)?;
        let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let gzip = ParallelGzip::new(blob, level, cores()).map_err(write_err)?;
        Ok(LayerWriter {
            spool: spool.to_path_buf(),
            inner: HashingWriter::new(gzip),
        })
    }

    pub fn finish(self) -> Result<WrittenLayer, LayerError> {
        let write_err = |source: io::Error| LayerError::Write {
            path: self.spool.clone(),
            source,
        };
        let (gzip, diff_id, _) = self.inner.finish();
        let blob = gzip.finish().map_err(write_err)?;
        let (buffered, digest, size) = blob.finish();
        buffered.into_inner().map_err(|e| write_err(e.into_error()))?;
        Ok(WrittenLayer {
            file: self.spool.clone(),
            digest,
            diff_id,
            size,
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &LayerEntry,
    mtime: u64,
    scanner: &Scanner,
) -> Result<(), LayerError> {
    let secret = || LayerError::Secret {
        path: crate::text::escape_control(&entry.path),
    };
    let target_holds_secret =
        matches!(&entry.kind, EntryKind::Symlink { target } if scanner.contains(target.as_bytes()));
    if scanner.contains(entry.path.as_bytes()) || target_holds_secret {
        return Err(secret());
    }
    let mut header = tar::Header::new_ustar();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_device_major(0).ok();
    header.set_device_minor(0).ok();
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();

    let name = match entry.kind {
        EntryKind::Dir => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    if !name.is_ascii() || header.set_path(&name).is_err() {
        pax.push(("path", name.clone().into_bytes()));
        set_placeholder(&mut header.as_ustar_mut().expect("ustar header").name, &name);
    }

    let io_err = |source: io::Error| LayerError::Write {
        path: PathBuf::from(&entry.path),
        source,
    };
    match &entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            finish_header(tar, &mut header, &pax).map_err(io_err)?;
            tar.append(&header, io::empty()).map_err(io_err)
        }
        EntryKind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            if !target.is_ascii() || header.set_link_name(target).is_err() {
                pax.push(("linkpath", target.clone().into_bytes()));
                set_placeholder(&mut header.as_ustar_mut().expect("ustar header").linkname, target);
            }
            finish_header(tar, &mut header, &pax).map_err(io_err)?;
            tar.append(&header, io::empty()).map_err(io_err)
        }
        EntryKind::File { content, executable } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            match content {
                Content::Bytes(bytes) => {
                    if scanner.contains(bytes) {
                        return Err(secret());
                    }
                    set_size(&mut header, &mut pax, bytes.len() as u64);
                    finish_header(tar, &mut header, &pax).map_err(io_err)?;
                    tar.append(&header, &bytes[..]).map_err(io_err)
                }
                Content::Path(path) => {
                    let read_err = |source| LayerError::Read {
                        path: path.clone(),
                        source,
                    };
                    let file = File::open(path).map_err(read_err)?;
                    let size = file.metadata().map_err(read_err)?.len();
                    set_size(&mut header, &mut pax, size);
                    finish_header(tar, &mut header, &pax).map_err(io_err)?;
                    let mut reader = ExactReader {
                        inner: file.take(size),
                        remaining: size,
                        scan: (!scanner.is_empty()).then(|| scanner.stream()),
                    };
                    tar.append(&header, &mut reader).map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => LayerError::Changed { path: path.clone() },
                        io::ErrorKind::InvalidData if reader.scan.as_ref().is_some_and(|s| s.found) => secret(),
                        _ => read_err(e),
                    })
                }
            }
        }
    }
}

fn set_size(header: &mut tar::Header, pax: &mut Vec<(&str, Vec<u8>)>, size: u64) {
    header.set_size(size);
    if size > USTAR_MAX_SIZE {
        pax.push(("size", size.to_string().into_bytes()));
    }
}

/// Writes the PAX extended header (if any) that precedes `header`, and the header's checksum.
fn finish_header<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    pax: &[(&str, Vec<u8>)],
) -> io::Result<()> {
    if !pax.is_empty() {
        tar.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))?;
    }
    header.set_cksum();
    Ok(())
}

/// The ustar field for a name that only fits in a PAX record: an ASCII stand-in, for readers without PAX.
fn set_placeholder(field: &mut [u8], name: &str) {
    field.fill(0);
    let ascii = name.bytes().map(|b| if b.is_ascii() && b != 0 { b } else { b'_' });
    let room = field.len() - 1;
    for (slot, b) in field.iter_mut().take(room).zip(ascii) {
        *slot = b;
    }
}

/// Reads exactly `remaining` bytes, failing with UnexpectedEof if the file shrank under us, and
/// with InvalidData as soon as what it read holds a secret.
struct ExactReader<'s, R> {
    inner: R,
    remaining: u64,
    scan: Option<ScanStream<'s>>,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= n as u64;
        if let Some(scan) = &mut self.scan {
            if scan.feed(&buf[..n]) {
                return Err(io::ErrorKind::InvalidData.into());
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    fn file(path: &str, bytes: &'static [u8]) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryKind::File {
                content: Content::Bytes(Cow::Borrowed(bytes)),
                executable: false,
            },
        }
    }

    fn read_back(layer: &WrittenLayer) -> Vec<(String, tar::EntryType, u32, u64, Vec<u8>)> {
        let gz = MultiGzDecoder::new(File::open(&layer.file).unwrap());
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, h.entry_type(), h.mode().unwrap(), h.mtime().unwrap(), data)
            })
            .collect()
    }

    #[test]
    fn entries_come_out_sorted_with_explicit_modes_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            file("app/b.js", b"b"),
            LayerEntry {
                path: "app".into(),
                kind: EntryKind::Dir,
            },
            LayerEntry {
                path: "app/run".into(),
                kind: EntryKind::File {
                    content: Content::Bytes(Cow::Borrowed(b"#!/bin/sh")),
                    executable: true,
                },
            },
            LayerEntry {
                path: "app/link".into(),
                kind: EntryKind::Symlink { target: "b.js".into() },
            },
        ];
        let layer = write_layer(entries, 42, &dir.path().join("l")).unwrap();
        let got = read_back(&layer);
        let names: Vec<_> = got.iter().map(|e| (e.0.as_str(), e.2, e.3)).collect();
        assert_eq!(
            names,
            [
                ("app/", 0o755, 42),
                ("app/b.js", 0o644, 42),
                ("app/link", 0o777, 42),
                ("app/run", 0o755, 42)
            ]
        );
        assert_eq!(got[1].4, b"b");
        assert!(got[2].1.is_symlink());
    }

    #[test]
    fn digests_describe_the_blob_and_the_uncompressed_tar() {
        let dir = tempfile::tempdir().unwrap();
        let layer = write_layer(vec![file("a", b"hello")], 1, &dir.path().join("l")).unwrap();
        let blob = std::fs::read(&layer.file).unwrap();
        assert_eq!(layer.size, blob.len() as u64);
        assert_eq!(layer.digest, Digest::of(&blob));
        let mut tar = Vec::new();
        MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(layer.diff_id, Digest::of(&tar));
    }

    #[test]
    fn long_and_non_ascii_names_survive_through_pax() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let entries = vec![
            LayerEntry {
                path: long.clone(),
                kind: EntryKind::File {
                    content: Content::Bytes(Cow::Borrowed(b"x")),
                    executable: false,
                },
            },
            file("grüße-日本.txt", b"y"),
            LayerEntry {
                path: "l".into(),
                kind: EntryKind::Symlink {
                    target: "t".repeat(150),
                },
            },
        ];
        let layer = write_layer(entries, 1, &dir.path().join("l")).unwrap();
        let names: Vec<_> = read_back(&layer).into_iter().map(|e| e.0).collect();
        assert!(names.contains(&long), "{names:?}");
        assert!(names.contains(&"grüße-日本.txt".to_string()), "{names:?}");
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_layer(vec![file("a", b"1"), file("a", b"2")], 1, &dir.path().join("l")).unwrap_err();
        assert!(matches!(err, LayerError::Duplicate(p) if p == "a"));
    }
}
