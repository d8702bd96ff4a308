//! Attestations: in-toto Statements (v1) about an image, in DSSE envelopes
//! (github.com/secure-systems-lab/dsse), signed with the build's key when it has one and
//! unsigned (no signatures) otherwise. SLSA provenance is one ([`provenance`]).

pub mod cosign;
pub mod keys;
pub mod provenance;
pub mod verify;

use base64::Engine;
use serde_json::{json, Value};

/// The payload type of an in-toto Statement in a DSSE envelope.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";
/// The artifact type of a DSSE envelope attached to an image (what cosign's OCI 1.1 mode and
/// BuildKit's attestations carry), with the predicate type in `in-toto.io/predicate-type`.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// An in-toto Statement v1 about one image (`name`, manifest digest `sha256`).
pub fn statement(name: &str, sha256_hex: &str, predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": sha256_hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// DSSE's pre-authentication encoding: what a signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An envelope of `payload` with `signatures` (`(keyid, signature bytes)`; none: unsigned).
pub fn envelope(payload_type: &str, payload: &[u8], signatures: &[(String, Vec<u8>)]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let signatures: Vec<Value> = signatures
        .iter()
        .map(|(keyid, sig)| json!({"keyid": keyid, "sig": b64.encode(sig)}))
        .collect();
    let mut bytes = serde_json::to_vec(&json!({
        "payloadType": payload_type,
        "payload": b64.encode(payload),
        "signatures": signatures,
    }))
    .expect("JSON serialises");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_follows_the_dsse_spec() {
        // The DSSE spec's own example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn an_unsigned_envelope_carries_the_statement() {
        let s = statement("fn", "ab", "https://slsa.dev/provenance/v1", json!({}));
        let e: Value = serde_json::from_slice(&envelope(IN_TOTO_PAYLOAD, s.to_string().as_bytes(), &[])).unwrap();
        assert_eq!(e["signatures"], json!([]));
        let payload = base64::engine::general_purpose::STANDARD
            .decode(e["payload"].as_str().unwrap())
            .unwrap();
        let back: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back["subject"][0]["digest"]["sha256"], "ab");
    }
}
