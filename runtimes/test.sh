#!/bin/sh
# Runs the tests of the runtime function servers (runtimes/node and runtimes/python) on this host.
# Needs node (20 or later) and python3 (3.11 or later); NODE and PYTHON override which ones.
# Exits non-zero when any test fails.
set -u
cd "$(dirname "$0")"
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
status=0

echo "== node server tests ($("$NODE" --version))"
"$NODE" --test node/test/server.test.js || status=1

echo "== python server tests ($("$PYTHON" --version))"
"$PYTHON" -B -m unittest discover -s python/test -t python/test -v || status=1

if [ "$status" -eq 0 ]; then echo "== all runtime server tests passed"; else echo "== runtime server tests FAILED"; fi
exit "$status"
