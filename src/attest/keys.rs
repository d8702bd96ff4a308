//! Signing keys: ECDSA P-256 with SHA-256 (cosign's default), read from PEM files: a private
//! key as PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl genpkey` writes) or SEC1
//! (`BEGIN EC PRIVATE KEY`), a public key as SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what
//! `cosign generate-key-pair` writes as cosign.pub). Signatures are DER, as cosign's are.
//! The RustCrypto `p256` crate does the arithmetic and the key formats.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not {wanted} ({why})")]
    Format {
        path: String,
        wanted: &'static str,
        why: String,
    },
}

pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)") // never the key
    }
}

impl SigningKey {
    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = read(path)?;
        let format = |why: String| KeyError::Format {
            path: path.display().to_string(),
            wanted: "an ECDSA P-256 private key in PEM (PKCS#8 or SEC1)",
            why,
        };
        if text.contains("ENCRYPTED") {
            return Err(format(
                "it is encrypted; give the key decrypted (openssl pkcs8 -in KEY -out PLAIN), read from a file only the build can read".into(),
            ));
        }
        let key = if text.contains("BEGIN EC PRIVATE KEY") {
            use p256::elliptic_curve::SecretKey;
            SecretKey::<p256::NistP256>::from_sec1_pem(&text)
                .map(p256::ecdsa::SigningKey::from)
                .map_err(|e| format(e.to_string()))?
        } else {
            p256::ecdsa::SigningKey::from_pkcs8_pem(&text).map_err(|e| format(e.to_string()))?
        };
        Ok(SigningKey { key })
    }

    /// An ECDSA P-256 SHA-256 signature of `message`, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: *self.key.verifying_key(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyingKey {
    key: p256::ecdsa::VerifyingKey,
}

impl VerifyingKey {
    pub fn from_file(path: &Path) -> Result<VerifyingKey, KeyError> {
        let text = read(path)?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Format {
            path: path.display().to_string(),
            wanted: "an ECDSA P-256 public key in PEM (BEGIN PUBLIC KEY, as cosign.pub)",
            why: e.to_string(),
        })?;
        Ok(VerifyingKey { key })
    }

    /// Whether `signature` (DER) is this key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(signature).is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key encodes")
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway key made for this test with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9IFh42y4feo+ORWQ
QcjnbBeXJsiD+UgoWdGJdz3mKb+hRANCAATyknil3UV36YwKemPTsfecwHQmWnni
3qMPgUKVFk7aDy2mRdHwi0SMD0gMc9+6dUmHuBhAEM/eGiYsM7gtJIoN
-----END PRIVATE KEY-----
";

    #[test]
    fn signs_and_verifies_and_refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, PRIVATE).unwrap();
        match SigningKey::from_file(&path) {
            Ok(key) => {
                assert_eq!(format!("{key:?}"), "SigningKey(…)", "Debug never shows the key");
                let sig = key.sign(b"payload");
                let public = dir.path().join("key.pub");
                std::fs::write(&public, key.verifying_key().to_pem()).unwrap();
                let verifier = VerifyingKey::from_file(&public).unwrap();
                assert!(verifier.verify(b"payload", &sig));
                assert!(!verifier.verify(b"payloaD", &sig));
                assert!(!verifier.verify(b"payload", b"not DER"));
            }
            Err(e) => panic!("{e}"),
        }
        std::fs::write(
            &path,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = SigningKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("it is encrypted"), "{err}");
        std::fs::write(&path, "hello").unwrap();
        let err = SigningKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("is not an ECDSA P-256 private key"), "{err}");
    }
}
