//! sha256 digests in the `sha256:<hex>` form used by OCI, and writers that compute them on the fly.

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked to be 64 lower-case hex characters so it is safe as a file name.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// Passes bytes through to `inner` while hashing and counting them.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The wrapped writer, the digest of everything written, and its length.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `from` to `to` (created), returning the sha256 digest and size of what was copied.
pub fn copy_hashed(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<(String, u64)> {
    let mut reader = std::fs::File::open(from)?;
    let mut writer = HashingWriter::new(std::io::BufWriter::new(std::fs::File::create(to)?));
    std::io::copy(&mut reader, &mut writer)?;
    let (inner, digest, size) = writer.finish();
    inner.into_inner().map_err(|e| e.into_error())?;
    Ok((digest, size))
}

/// The sha256 digest of a gzip file's decompressed bytes (a layer's diffID).
pub fn gunzip_digest(path: &std::path::Path) -> std::io::Result<String> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut writer = HashingWriter::new(std::io::sink());
    std::io::copy(&mut flate2::read::MultiGzDecoder::new(file), &mut writer)?;
    Ok(writer.finish().1)
}

/// The sha256 digest of a file's bytes.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    let mut writer = HashingWriter::new(std::io::sink());
    std::io::copy(&mut std::fs::File::open(path)?, &mut writer)?;
    Ok(writer.finish().1)
}

/// What identifies a file's bytes as last written: inode, size and change time. The change time
/// moves on every write, through any link, and cannot be set back, so a file whose identity is
/// unchanged still holds the bytes that were hashed.
pub fn file_identity(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("{}:{}:{}.{}", m.ino(), m.len(), m.ctime(), m.ctime_nsec()))
}

/// Whether the cached file at `path` still holds `digest`: cheaply when its identity is the
/// `recorded` one, else by hashing it again. Returns the verdict and the identity to record.
pub fn still_holds(path: &std::path::Path, digest: &str, recorded: Option<&str>) -> (bool, Option<String>) {
    let now = file_identity(path);
    if now.is_some() && now.as_deref() == recorded {
        return (true, now);
    }
    let ok = file_digest(path).is_ok_and(|d| d == digest);
    (ok, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_hex_rejects_anything_that_is_not_a_sha256_digest() {
        let good = sha256_digest(b"x");
        assert_eq!(digest_hex(&good).map(str::len), Some(64));
        assert_eq!(digest_hex("sha256:../../etc/passwd"), None);
        assert_eq!(digest_hex("sha512:abcd"), None);
        assert_eq!(digest_hex(&good.to_uppercase()), None);
    }

    #[test]
    fn hashing_writer_hashes_what_passes_through() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, sha256_digest(b"hello world"));
    }
}
