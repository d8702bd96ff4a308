#!/usr/bin/env bash
# Makes the fnbuild builder image (Dockerfile.builder) in the local Docker daemon, from a base made
# on this machine (no public registry): and, with --push, pushes it to a registry.
#
#   tests/support/make-builder-image.sh [--binary FILE] [--push REGISTRY/REPO[:TAG]]
#
# stdout: the image's name, one line: fnbuild-local/builder:KEY, or with --push the pushed
# REGISTRY/REPO:TAG (TAG defaults to KEY), pushed with skopeo (credentials: FNBUILD_PUSH_CREDS=USER:PASS;
# plain HTTP for 127.*/localhost). Progress goes to stderr.
#
# 1. The base, fnbuild-local/builder-base:KEY (`docker import` of a rootfs made here): the
#    test python base (tests/support/make-base-images.sh: CPython 3.12 at /usr/local, glibc, dash,
#    users root and 1000, /tmp 1777) plus this machine's node and npm (NODE_BIN, npm's tree
#    next to it), Debian's git and ssh (git sources), pip for CPython 3.12 (from PYTHON_PREFIX, as make-base-images.sh picks it), the
#    shared libraries the fnbuild binary needs, and the system CA bundle.
# 2. `docker build --build-arg BASE=fnbuild-local/builder-base:KEY -f Dockerfile.builder CTX`
#    with the fnbuild binary (stripped) and the runtimes' library layers (`fnbuild
#    runtime-libraries`: from the npm registry and PyPI, or FNBUILD_RUNTIME_LIBRARIES, a store
#    that has them) in CTX: fnbuild-local/builder:KEY.
#
# Cached: KEY hashes this script, Dockerfile.builder, the binary and every host input; when the
# daemon has fnbuild-local/builder:KEY nothing is built. Concurrent runs are serialised by a flock.
#
# Environment: FNBUILD_BUILDER_BIN (default: --binary, else <target>/release/fnbuild),
# FNBUILD_CONTROLLER_BIN (default: --controller-binary, else fnbuild-controller beside it), NODE_BIN
# (/usr/bin/node), PYTHON_PREFIX (pyenv's newest 3.12.x), FNBUILD_TEST_BASES (<target>/test-bases).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BASES=${FNBUILD_TEST_BASES:-$TARGET/test-bases}
OUT=$TARGET/builder-image
BIN=${FNBUILD_BUILDER_BIN:-$TARGET/release/fnbuild}
CONTROLLER_BIN=${FNBUILD_CONTROLLER_BIN:-}
PUSH=
NODE_BIN=${NODE_BIN:-/usr/bin/node}
PYTHON_VERSION=3.12
if [ -z "${PYTHON_PREFIX:-}" ]; then
    PYTHON_PREFIX=$(ls -d "${PYENV_ROOT:-/root/.pyenv}/versions/$PYTHON_VERSION".* 2>/dev/null | sort -V | tail -1 || true)
fi
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

die() { echo "make-builder-image: $*" >&2; exit 1; }
log() { echo "make-builder-image: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BIN=$2; shift 2 ;;
        --controller-binary) CONTROLLER_BIN=$2; shift 2 ;;
        --push) PUSH=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ -x "$BIN" ] || die "no fnbuild binary at $BIN (cargo build --release, or give --binary)"
CONTROLLER_BIN=${CONTROLLER_BIN:-$(dirname "$BIN")/fnbuild-controller}
[ -x "$CONTROLLER_BIN" ] || die "no fnbuild-controller binary at $CONTROLLER_BIN (cargo build --release, or give --controller-binary)"
[ -x "$NODE_BIN" ] || die "no node at $NODE_BIN"
NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
[ -f "$NPM_DIR/bin/npm-cli.js" ] || die "cannot find npm's tree (got $NPM_DIR)"
PY_SITE=$PYTHON_PREFIX/lib/python$PYTHON_VERSION/site-packages
[ -d "$PY_SITE/pip" ] || die "no pip for CPython $PYTHON_VERSION in $PY_SITE (set PYTHON_PREFIX)"
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE"
command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "no Docker daemon answers (run tests/support/setup.sh)"

# add_file, add_elf
. "$HERE/rootfs.sh"

# The test bases (cached; quick when made already).
"$HERE/make-base-images.sh" "$BASES" >&2

mkdir -p "$OUT"
key() {
    {
        sha256sum "${BASH_SOURCE[0]}" "$HERE/rootfs.sh" "$REPO/Dockerfile.builder" | cut -d' ' -f1
        sha256sum "$BIN" "$CONTROLLER_BIN" | cut -d' ' -f1
        cat "$BASES/.stamp"
        stat -Lc '%n %s %Y' "$NODE_BIN" "$NPM_DIR/package.json" "$PY_SITE/pip/__init__.py" "$CA_BUNDLE"
    } | sha256sum | cut -c1-16
}
KEY=$(key)
IMAGE=fnbuild-local/builder:$KEY
BASE_IMAGE=fnbuild-local/builder-base:$KEY

exec 9>"$OUT/.lock"
flock 9

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE is up to date"
else
    SECONDS=0
    WORK=$(mktemp -d "$OUT/work.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    ROOT=$WORK/rootfs
    mkdir -p "$ROOT"

    # The python base's one layer: CPython 3.12 at /usr/local, glibc, dash, passwd, /tmp.
    layout=$BASES/python
    manifest=$(jq -r '.manifests[0].digest | sub("^sha256:"; "")' "$layout/index.json")
    layers=$(jq -r '.layers[].digest | sub("^sha256:"; "")' "$layout/blobs/sha256/$manifest")
    # (umoci's layers end without tar's end-of-archive blocks, which GNU tar reports as an error.)
    for l in $layers; do tar -xzf "$layout/blobs/sha256/$l" -C "$ROOT" 2>/dev/null || true; done
    [ -x "$ROOT/usr/local/bin/python$PYTHON_VERSION" ] && [ -e "$ROOT/usr/lib/x86_64-linux-gnu/libc.so.6" ] ||
        die "cannot unpack the python base in $layout"
    # node and npm (npm's JavaScript tree, started through node by a small sh wrapper).
    add_elf "$ROOT" "$NODE_BIN"
    mv "$ROOT$(readlink -f "$(dirname "$NODE_BIN")")/$(basename "$NODE_BIN")" "$ROOT/usr/local/bin/node"
    ln -sf ../local/bin/node "$ROOT/usr/bin/node"
    mkdir -p "$ROOT/usr/local/lib/node_modules"
    cp -a "$NPM_DIR" "$ROOT/usr/local/lib/node_modules/npm"
    for tool in npm npx; do
        printf '#!/bin/sh\nexec /usr/local/bin/node /usr/local/lib/node_modules/npm/bin/%s-cli.js "$@"\n' "$tool" \
            >"$ROOT/usr/local/bin/$tool"
        chmod 755 "$ROOT/usr/local/bin/$tool"
    done

    # git and ssh, for `fnbuild build --git-url` (Debian's, at their own paths: git finds its
    # helpers in /usr/lib/git-core).
    add_elf "$ROOT" /usr/bin/git /usr/lib/git-core/git-remote-http /usr/bin/ssh
    ln -sf git-remote-http "$ROOT/usr/lib/git-core/git-remote-https"
    [ -d /usr/share/git-core/templates ] && mkdir -p "$ROOT/usr/share/git-core" &&
        cp -a /usr/share/git-core/templates "$ROOT/usr/share/git-core/"

    # pip for CPython 3.12 (the base has an empty site-packages), run as `python3.12 -m pip`.
    sp=$ROOT/usr/local/lib/python$PYTHON_VERSION/site-packages
    mkdir -p "$sp"
    (cd "$PY_SITE" && tar --exclude=__pycache__ -cf - pip pip-*.dist-info) | tar -xf - -C "$sp"
    for tool in pip$PYTHON_VERSION pip3 pip; do
        printf '#!/bin/sh\nexec /usr/local/bin/python%s -m pip "$@"\n' "$PYTHON_VERSION" >"$ROOT/usr/local/bin/$tool"
        chmod 755 "$ROOT/usr/local/bin/$tool"
    done

    # fnbuild's own shared libraries (glibc's, mostly there already), and the CA bundle.
    while read -r lib; do
        [ -n "$lib" ] && add_file "$ROOT" "$lib"
    done < <(ldd "$BIN" "$CONTROLLER_BIN" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
    mkdir -p "$ROOT/etc/ssl/certs"
    cp -L "$CA_BUNDLE" "$ROOT/etc/ssl/certs/ca-certificates.crt"
    chmod 644 "$ROOT/etc/ssl/certs/ca-certificates.crt"
    ldconfig -r "$ROOT" 2>/dev/null || true

    log "importing the base $BASE_IMAGE ($(du -sh "$ROOT" | cut -f1))"
    tar -C "$ROOT" --numeric-owner -cf - . |
        docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null

    mkdir -p "$WORK/context"
    cp "$BIN" "$WORK/context/fnbuild"
    cp "$CONTROLLER_BIN" "$WORK/context/fnbuild-controller"
    strip "$WORK/context/fnbuild" "$WORK/context/fnbuild-controller" 2>/dev/null || true
    # The runtimes' library layers, so that build Jobs never download them (the store tests
    # share, when it is there: made from the same lock files, it is the same bytes).
    log "runtime libraries → $WORK/context/runtime-libraries"
    "$BIN" runtime-libraries --quiet --output "$WORK/context/runtime-libraries" \
        ${FNBUILD_RUNTIME_LIBRARIES:+--from "$FNBUILD_RUNTIME_LIBRARIES"} >&2 ||
        die "cannot make the runtime libraries"
    log "docker build --build-arg BASE=$BASE_IMAGE -f Dockerfile.builder → $IMAGE"
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$BASE_IMAGE" -f "$REPO/Dockerfile.builder" \
        -t "$IMAGE" "$WORK/context" >&2 || die "docker build failed"
    # Keep only this key's images.
    docker images --format '{{.Repository}}:{{.Tag}}' |
        grep -E '^fnbuild-local/builder(-base)?:' | grep -v ":$KEY\$" | xargs -r docker rmi >/dev/null 2>&1 || true
    log "made $IMAGE in ${SECONDS}s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%d MB", $1 / 1e6 }'))"
fi

if [ -z "$PUSH" ]; then
    echo "$IMAGE"
    exit 0
fi
case "${PUSH##*/}" in *:*) REF=$PUSH ;; *) REF=$PUSH:$KEY ;; esac
# skopeo, not docker push: no `docker login` (no credentials written to ~/.docker).
command -v skopeo >/dev/null || die "skopeo is missing (run tests/support/setup.sh)"
args=(copy --quiet)
case "$REF" in 127.*|localhost[:/]*) args+=(--dest-tls-verify=false) ;; esac
[ -n "${FNBUILD_PUSH_CREDS:-}" ] && args+=(--dest-creds "$FNBUILD_PUSH_CREDS")
skopeo "${args[@]}" "docker-daemon:$IMAGE" "docker://$REF" >&2 || die "pushing $IMAGE to $REF failed"
echo "$REF"
