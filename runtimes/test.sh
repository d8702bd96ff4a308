#!/bin/sh
# Runs the tests of the runtime function servers (runtimes/node and runtimes/python) on this host.
# Needs node (20 or later) and python3 (3.11 or later); NODE and PYTHON override which ones.
# The node tests also run on every official Node binary tests/support/make-base-images.sh has
# downloaded (${FNBUILD_CACHE:-/var/cache/fnbuild}/node-binaries/node-*/bin/node: Node 22 and 24),
# the versions the nodejs22 and nodejs24 runtimes run on; none there, none run.
# The servers run with the libraries the runtime layer carries (libraries.sh installs them).
# Exits non-zero when any test fails.
set -u
cd "$(dirname "$0")"
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
status=0

node_libs=$(./libraries.sh node) || exit 1
python_libs=$(PYTHON="$PYTHON" ./libraries.sh python) || exit 1

for node in "$NODE" "${FNBUILD_CACHE:-/var/cache/fnbuild}"/node-binaries/node-*/bin/node; do
    [ "$node" = "$NODE" ] || [ -x "$node" ] || continue    # the glob matched nothing
    echo "== node server tests ($("$node" --version))"
    NODE_PATH="$node_libs/node_modules" "$node" --test node/test/*.test.js || status=1
done

echo "== python server tests ($("$PYTHON" --version))"
PYTHONPATH="$python_libs/site" "$PYTHON" -B -m unittest discover -s python/test -t python/test -v || status=1

if [ "$status" -eq 0 ]; then echo "== all runtime server tests passed"; else echo "== runtime server tests FAILED"; fi
exit "$status"
