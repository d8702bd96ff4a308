#!/usr/bin/env bash
# Installs PyPI's kubernetes-validate (pinned; it carries the Kubernetes JSON schemas of many
# versions, so it needs no network once installed) into a virtualenv under OUTDIR, once, and
# prints the command that runs it: `PYTHON -m kubernetes_validate` (the venv's python, which
# keeps working after the venv is renamed into place, unlike its scripts' #! lines).
set -euo pipefail

VERSION=1.37.0
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)/kubernetes-validate-$VERSION

if [ ! -e "$OUT/.complete" ]; then
    exec 9>"$OUT.lock"
    flock 9
    if [ ! -e "$OUT/.complete" ]; then
        rm -rf "$OUT.tmp" "$OUT"
        python3 -m venv "$OUT.tmp" >&2
        "$OUT.tmp/bin/python3" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2 ||
            { echo "kubernetes-validate.sh: pip install kubernetes-validate==$VERSION failed" >&2; exit 1; }
        mv "$OUT.tmp" "$OUT"
        touch "$OUT/.complete"
    fi
fi
echo "$OUT/bin/python3"
