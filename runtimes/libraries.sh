#!/bin/sh
# libraries.sh <node|python>: prints the directory holding the libraries of
# runtimes/<server>/libraries/ (what the runtime layer carries) for running a server on this host:
# <dir>/node_modules (put it on NODE_PATH) or <dir>/site (PYTHONPATH). Installed once per lock file
# under ${FNBUILD_CACHE:-/var/cache/fnbuild}/runtime-libraries; needs the npm registry or PyPI the
# first time. PYTHON chooses the pip.
set -u
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
server=${1:?usage: libraries.sh node|python}
case "$server" in
node) lock=node/libraries/package-lock.json ;;
python) lock=python/libraries/requirements.txt ;;
*) echo "libraries.sh: unknown server '$server' (node or python)" >&2; exit 2 ;;
esac
dir="${FNBUILD_CACHE:-/var/cache/fnbuild}/runtime-libraries/$server-$(sha256sum "$lock" | cut -c1-16)"
if [ ! -d "$dir" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" || exit 1
    case "$server" in
    node) cp node/libraries/package.json "$lock" "$dir.tmp/" &&
        (cd "$dir.tmp" && npm ci --ignore-scripts --no-audit --no-fund >&2) ;;
    python) "$PYTHON" -m pip install -q --no-deps --require-hashes --only-binary=:all: \
        --no-compile --target "$dir.tmp/site" -r "$lock" >&2 && rm -rf "$dir.tmp/site/bin" ;;
    esac || { echo "libraries.sh: cannot install the $server runtime libraries into $dir" >&2; exit 1; }
    mv "$dir.tmp" "$dir"
fi
echo "$dir"
