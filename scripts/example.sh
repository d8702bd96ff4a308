#!/usr/bin/env bash
# The main job, from nothing: set this machine up, build the example functions into images with
# fnbuild, push them to a local registry, run them in Docker and show their HTTP answers.
#   scripts/example.sh            # both examples
#   scripts/example.sh node       # just examples/hello-node (or: python)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
which=${1:-all}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Setting up: packages (docker.io, docker-registry, skopeo, umoci), dockerd, local base images"
bash tests/support/setup.sh
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (rustup) first" >&2; exit 1; }

say "Building fnbuild (release)"
cargo build --release --quiet -p fnbuild    # the builder only: no Kubernetes crates to compile
FNBUILD=$REPO/target/release/fnbuild

# A throw-away registry on a free loopback port, stopped when this script ends.
WORK=$(mktemp -d /tmp/fnbuild-example.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REGISTRY=127.0.0.1:$PORT
cat >"$WORK/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REGISTRY}
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
CONTAINERS=()
cleanup() {
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    kill "$REGISTRY_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done

# No public registry is reachable here: the base images are made from the official Node.js 24
# binary and this machine's python (tests/support/make-base-images.sh) and pushed to the local registry.
skopeo copy -q --dest-tls-verify=false "oci:target/test-bases/node24:24" "docker://$REGISTRY/base/node:24"
skopeo copy -q --dest-tls-verify=false "oci:target/test-bases/python:3.12" "docker://$REGISTRY/base/python:3.12"

run_example() {
    local name=$1 runtime=$2 base=$3
    say "fnbuild build examples/$name --runtime $runtime --push $REGISTRY/$name:latest"
    local result image
    result=$("$FNBUILD" build "examples/$name" --runtime "$runtime" --base "$REGISTRY/$base" \
        --push "$REGISTRY/$name:latest" --json)
    jq '{digest, layers: [.layers[] | {role, size, digest}], timings_ms}' <<<"$result"
    image=$(jq -r '.outputs[0].image' <<<"$result")

    say "docker run --read-only --tmpfs /tmp --user 1000 $image"
    local id port
    id=$(docker run -d --read-only --tmpfs /tmp --user 1000 -e FUNC_NAME="$name" \
        -p 127.0.0.1::8080 "$image")
    CONTAINERS+=("$id")
    port=$(docker port "$id" 8080 | head -1 | sed 's/.*://')
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    say "curl -X POST -H 'Content-Type: application/json' -d '{\"name\":\"fnbuild\"}' http://127.0.0.1:$port/"
    curl -sS -i -X POST -H 'Content-Type: application/json' -d '{"name":"fnbuild"}' "http://127.0.0.1:$port/"
    echo
}

case $which in
    all) run_example hello-node nodejs24 base/node:24; run_example hello-python python312 base/python:3.12 ;;
    node) run_example hello-node nodejs24 base/node:24 ;;
    python) run_example hello-python python312 base/python:3.12 ;;
    *) echo "usage: $0 [all|node|python]" >&2; exit 2 ;;
esac
say "Done: images built and pushed by fnbuild, served by the runtimes in Docker"
