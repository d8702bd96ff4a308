#!/usr/bin/env python3
"""Validates an SBOM with the official third-party libraries (not with our own code).

Run with the python that tests/support/sbom-validators.sh prints:
    validate-sbom.py spdx FILE        SPDX JSON (or tag-value/YAML/XML/RDF, by file extension)
    validate-sbom.py cyclonedx FILE   CycloneDX 1.6 JSON, strict schema (no unknown properties)

Exit 0: valid, one line "valid SPDX 2.3: N packages" / "valid CycloneDX 1.6: N components".
Exit 1: invalid, one problem per line on stdout.
Exit 2: usage error or any unexpected exception (one line on stderr).
"""
import json
import sys


def validate_spdx(path):
    from spdx_tools.spdx.formats import file_name_to_format
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.json import json_parser
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    try:
        try:
            file_name_to_format(path)
            document = parse_file(path)
        except SPDXParsingError as e:
            if not any(m.startswith("Unsupported SPDX file type") for m in e.get_messages()):
                raise
            # No known extension (e.g. an OCI blob named by its digest): ours are JSON.
            document = json_parser.parse_from_file(path)
    except SPDXParsingError as e:
        # The parser already rejects documents that lack required fields (SPDXID,
        # downloadLocation, ...): that is an invalid document, not a tool failure.
        for message in e.get_messages():
            print(message)
        return 1
    messages = validate_full_spdx_document(document)
    for message in messages:
        print(message.validation_message)
    if messages:
        return 1
    version = document.creation_info.spdx_version.removeprefix("SPDX-")
    print(f"valid SPDX {version}: {len(document.packages)} packages")
    return 0


def count_components(components):
    return sum(1 + count_components(c.get("components", [])) for c in components)


def validate_cyclonedx(path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with open(path, encoding="utf-8") as f:
        text = f.read()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if errors is not None:
        for error in errors:
            e = error.data  # a jsonschema.ValidationError; its str() spans dozens of lines
            print(f"{e.json_path}: {e.message}")
        return 1
    bom = json.loads(text)
    # The 1.6 schema types specVersion as any string, so a 1.5 document would pass too.
    if bom.get("specVersion") != "1.6":
        print(f"$.specVersion: {bom.get('specVersion')!r} is not '1.6'")
        return 1
    print(f"valid CycloneDX 1.6: {count_components(bom.get('components', []))} components")
    return 0


def main(argv):
    validators = {"spdx": validate_spdx, "cyclonedx": validate_cyclonedx}
    if len(argv) != 3 or argv[1] not in validators:
        print(f"usage: {argv[0]} spdx|cyclonedx FILE", file=sys.stderr)
        return 2
    try:
        return validators[argv[1]](argv[2])
    except Exception as e:  # noqa: BLE001 - any failure of the tool itself is exit 2
        print(f"validate-sbom.py: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
