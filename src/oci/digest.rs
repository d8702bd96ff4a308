//! Content digests (`sha256:<hex>`, as OCI writes them) and writers that compute them on the fly.

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

/// A sha256 content digest, `sha256:` and 64 lower-case hex characters. It is checked when made,
/// so its hex part is always safe as a file name (`blobs/sha256/<hex>`). Other algorithms are
/// refused: nothing here can verify them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A string that is not a sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256: and 64 lower-case hex characters)")]
pub struct DigestError(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(Sha256::digest(bytes).into())
    }

    fn from_hash(hash: [u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(DigestError(s.chars().take(80).collect()))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Digest, DigestError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, other: &Digest) -> bool {
        *self == other.0
    }
}

impl PartialEq<Digest> for &str {
    fn eq(&self, other: &Digest) -> bool {
        *self == other.0
    }
}

/// The digest of `bytes` as a string (for the registry client, whose API still takes strings).
pub fn sha256_digest(bytes: &[u8]) -> String {
    Digest::of(bytes).0
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
    pub fn finish(self) -> (W, Digest, u64) {
        let digest = Digest::from_hash(self.hasher.finalize().into());
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
pub fn copy_hashed(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<(Digest, u64)> {
    let mut reader = std::fs::File::open(from)?;
    let mut writer = HashingWriter::new(std::io::BufWriter::new(std::fs::File::create(to)?));
    std::io::copy(&mut reader, &mut writer)?;
    let (inner, digest, size) = writer.finish();
    inner.into_inner().map_err(|e| e.into_error())?;
    Ok((digest, size))
}

/// The sha256 digest of a gzip file's decompressed bytes (a layer's diffID).
pub fn gunzip_digest(path: &std::path::Path) -> std::io::Result<Digest> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut writer = HashingWriter::new(std::io::sink());
    std::io::copy(&mut flate2::read::MultiGzDecoder::new(file), &mut writer)?;
    Ok(writer.finish().1)
}

/// The sha256 digest of a file's bytes.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<Digest> {
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
pub fn still_holds(path: &std::path::Path, digest: &Digest, recorded: Option<&str>) -> (bool, Option<String>) {
    let now = file_identity(path);
    if now.is_some() && now.as_deref() == recorded {
        return (true, now);
    }
    let ok = file_digest(path).is_ok_and(|d| d == *digest);
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
    fn only_sha256_digests_parse() {
        let good = Digest::of(b"x");
        assert_eq!(good.to_string().parse::<Digest>().unwrap(), good);
        assert_eq!(good.hex().len(), 64);
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!(good.to_string().to_uppercase().parse::<Digest>().is_err());
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), good);
        assert!(serde_json::from_str::<Digest>(r#""sha256:x""#).is_err());
    }

    #[test]
    fn hashing_writer_hashes_what_passes_through() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, Digest::of(b"hello world"));
    }
}
