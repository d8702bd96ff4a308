#!/usr/bin/env python3
"""Verifies a DSSE envelope with the in-toto Python library (not with fnbuild's code).

Run with the python that tests/support/sbom-validators.sh prints:
    verify-dsse.py PUBLIC_KEY.pem ENVELOPE.json

The key is an ECDSA P-256 public key in PEM. The envelope's key ids are set to the key's own id
first: a key id is a hint for finding the key, not covered by the signature.
Exit 0: "verified: <predicateType> about <subject digest>". Exit 1: not verified (the reason).
Exit 2: usage error or an unexpected exception.
"""
import json
import sys


def main():
    if len(sys.argv) != 3:
        print("usage: verify-dsse.py PUBLIC_KEY.pem ENVELOPE.json", file=sys.stderr)
        return 2
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from in_toto.models.metadata import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    with open(sys.argv[1], "rb") as f:
        key = SSlibKey.from_crypto(load_pem_public_key(f.read()))
    with open(sys.argv[2]) as f:
        data = json.load(f)
    for signature in data.get("signatures", []):
        signature["keyid"] = key.keyid
    envelope = Envelope.from_dict(data)
    try:
        envelope.verify([key], 1)
    except VerificationError as e:
        print(f"not verified: {e}")
        return 1
    statement = json.loads(envelope.payload)
    subject = statement["subject"][0]["digest"]["sha256"]
    print(f"verified: {statement['predicateType']} about sha256:{subject}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one line, never a traceback
        print(f"verify-dsse.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
