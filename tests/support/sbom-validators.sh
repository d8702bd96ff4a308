#!/usr/bin/env bash
# Installs pinned third-party SBOM tools into a virtualenv, once, and prints its python on stdout
# (all else goes to stderr), so callers can do PY=$(tests/support/sbom-validators.sh):
#   spdx-tools                         pyspdxtools / spdx_tools: parse + validate SPDX 2.3 JSON
#   cyclonedx-python-lib[json-validation]  cyclonedx.validation.json: CycloneDX 1.6 JSON schema
#   in-toto                            in-toto-verify & co., for DSSE / in-toto checks later
#   cyclonedx-bom                      `cyclonedx-py environment`: a reference SBOM of a Python env
# tests/support/validate-sbom.py wraps the first two: "$PY" tests/support/validate-sbom.py spdx FILE
#
# The venv lives outside the repo (default /var/cache/fnbuild/sbom-validators/venv; override with
# FNBUILD_SBOM_VENV) so that fresh CI clones reuse it: when its stamp file holds exactly the
# pinned list below and its python still runs, nothing is installed and this takes milliseconds.
# Changing a pin rebuilds the venv from scratch (no leftovers of old versions).
set -euo pipefail

# Newest versions that install here (checked with `pip index versions` / a clean install).
PACKAGES=(
    spdx-tools==0.8.5
    'cyclonedx-python-lib[json-validation]==11.12.0'
    in-toto==3.1.0
    cyclonedx-bom==7.5.0
)
VENV=${FNBUILD_SBOM_VENV:-/var/cache/fnbuild/sbom-validators/venv}
PYTHON3=${PYTHON3:-python3}
STAMP=$VENV/.fnbuild-packages

log() { echo "sbom-validators.sh: $*" >&2; }
want=$(printf '%s\n' "${PACKAGES[@]}")

# Fast path, without the lock: stamp matches and the venv's python (a symlink to the base
# interpreter, which may have been upgraded or removed since) still starts.
up_to_date() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python3" -c '' 2>/dev/null; }
if up_to_date; then echo "$VENV/bin/python3"; exit 0; fi

mkdir -p "$(dirname "$VENV")"
# Serialise concurrent runs (parallel tests); re-check once we hold the lock.
exec 9>"$VENV.lock"
flock 9
if ! up_to_date; then
    rm -rf "$VENV"
    # Debian's python3 ships venv's ensurepip separately, in python3-venv.
    if ! "$PYTHON3" -m venv "$VENV" >&2; then
        command -v apt-get >/dev/null || { log "$PYTHON3 -m venv failed and there is no apt-get"; exit 1; }
        log "$PYTHON3 -m venv failed; installing python3-venv"
        rm -rf "$VENV"
        # Try without `apt-get update` first: a machine with fresh lists needs none.
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2; }
        "$PYTHON3" -m venv "$VENV" >&2
    fi
    log "installing ${PACKAGES[*]} into $VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check --no-input "${PACKAGES[@]}" >&2 ||
        { log "pip install failed"; exit 1; }
    # Written last, so an interrupted install is redone on the next run.
    printf '%s\n' "$want" >"$STAMP"
fi
echo "$VENV/bin/python3"
