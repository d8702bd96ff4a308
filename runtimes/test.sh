#!/bin/sh
# Runs the tests of the runtime function servers (runtimes/node and runtimes/python) on this host.
# Needs node (20 or later) and python3 (3.11 or later); NODE and PYTHON override which ones.
# The node tests also run on every official Node binary tests/support/make-base-images.sh has
# downloaded (${FNBUILD_CACHE:-/var/cache/fnbuild}/node-binaries/node-*/bin/node: Node 22 and 24),
# the versions the nodejs22 and nodejs24 runtimes run on; none there, none run.
# The servers run with the libraries of runtimes/<server>/libraries/ (what the runtime layer
# carries), installed once per lock file under $FNBUILD_CACHE/runtime-libraries (needs the npm
# registry and PyPI the first time).
# Exits non-zero when any test fails.
set -u
cd "$(dirname "$0")"
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
CACHE=${FNBUILD_CACHE:-/var/cache/fnbuild}/runtime-libraries
status=0

# libraries <server> <lock file>: prints the directory the libraries of that lock file are in.
libraries() {
    dir="$CACHE/$1-$(sha256sum "$2" | cut -c1-16)"
    if [ ! -d "$dir" ]; then
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" || return 1
        case "$1" in
        node) cp "$1/libraries/package.json" "$1/libraries/package-lock.json" "$dir.tmp/" &&
            (cd "$dir.tmp" && npm ci --ignore-scripts --no-audit --no-fund >&2) ;;
        python) "$PYTHON" -m pip install -q --no-deps --require-hashes --only-binary=:all: \
            --no-compile --target "$dir.tmp/site" -r "$2" >&2 && rm -rf "$dir.tmp/site/bin" ;;
        esac || { echo "cannot install the $1 runtime libraries into $dir" >&2; return 1; }
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

node_libs=$(libraries node node/libraries/package-lock.json) || exit 1
python_libs=$(libraries python python/libraries/requirements.txt) || exit 1

for node in "$NODE" "${FNBUILD_CACHE:-/var/cache/fnbuild}"/node-binaries/node-*/bin/node; do
    [ "$node" = "$NODE" ] || [ -x "$node" ] || continue    # the glob matched nothing
    echo "== node server tests ($("$node" --version))"
    NODE_PATH="$node_libs/node_modules" "$node" --test node/test/*.test.js || status=1
done

echo "== python server tests ($("$PYTHON" --version))"
PYTHONPATH="$python_libs/site" "$PYTHON" -B -m unittest discover -s python/test -t python/test -v || status=1

if [ "$status" -eq 0 ]; then echo "== all runtime server tests passed"; else echo "== runtime server tests FAILED"; fi
exit "$status"
