#!/usr/bin/env bash
# Prepares this machine for fnbuild's integration tests. Idempotent, and quick (well under a
# second) when everything is already there:
#   1. installs docker.io docker-registry skopeo umoci pigz jq qemu-user-static file ... (PACKAGES
#      below; apt-get) if any is missing,
#   2. starts dockerd in the background if no daemon answers (log: $FNBUILD_TEST_TMP/dockerd.log),
#      with tests/support/runc-no-oom-adj registered as its default runtime (/etc/docker/daemon.json),
#   3. makes the test base images (tests/support/make-base-images.sh) in $FNBUILD_TEST_BASES, then
#      the multi-platform ones from them (tests/support/make-multiarch-bases.sh: its arm64 binaries
#      are checked under qemu-aarch64-static).
#
# Environment:
#   FNBUILD_TEST_BASES  where the base images go (default: $CARGO_TARGET_DIR or <repo>/target,
#                       then /test-bases)
#   FNBUILD_TEST_TMP    logs and the lock (default: /tmp/fnbuild-test)
#   FNBUILD_TEST_NO_DOCKER=1  skip step 2 (e.g. on a machine without the privileges dockerd needs)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BASES=${FNBUILD_TEST_BASES:-$TARGET/test-bases}
TMPD=${FNBUILD_TEST_TMP:-/tmp/fnbuild-test}
PACKAGES=(docker.io docker-registry skopeo umoci pigz jq curl time git python3 openssh-server groff-base qemu-user-static file)
COMMANDS=(docker dockerd docker-registry skopeo umoci pigz jq curl /usr/bin/time git python3 /usr/sbin/sshd groff qemu-aarch64-static file)

log() { echo "setup.sh: $*" >&2; }
die() { echo "setup.sh: $*" >&2; exit 1; }

mkdir -p "$TMPD"

tools_present() {
    local c
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || return 1; done
}

docker_answers() { docker info >/dev/null 2>&1; }

# Step 3: both scripts are cached (well under a second together when nothing changed) and lock
# on their own. qemu-aarch64-static is one of COMMANDS, so the arm64 check is required.
make_bases() {
    "$HERE/make-base-images.sh" "$BASES"
    exec env QEMU_CHECK=1 "$HERE/make-multiarch-bases.sh" "$BASES"
}

# Fast path: nothing to do, take no lock.
if tools_present && { [ "${FNBUILD_TEST_NO_DOCKER:-}" = 1 ] || docker_answers; }; then
    make_bases
fi

# Serialise concurrent setups (parallel test binaries) on the slow path.
exec 9>"$TMPD/setup.lock"
flock 9

# 1. Packages.
if ! tools_present; then
    [ "$(id -u)" = 0 ] || die "missing tools (${PACKAGES[*]}) and not root; install them first"
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$TMPD/apt.log" 2>&1 || { cat "$TMPD/apt.log" >&2; die "apt-get update failed"; }
    apt-get install -y -qq "${PACKAGES[@]}" >>"$TMPD/apt.log" 2>&1 ||
        { tail -50 "$TMPD/apt.log" >&2; die "apt-get install failed"; }
    hash -r
    tools_present || die "still missing a command after installing: need ${COMMANDS[*]}"
fi

# 2. The Docker daemon.
if [ "${FNBUILD_TEST_NO_DOCKER:-}" != 1 ] && ! docker_answers; then
    if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        log "dockerd is running but does not answer yet; waiting"
    else
        [ "$(id -u)" = 0 ] || die "no Docker daemon answers and not root, so cannot start one"
        # Register the runc wrapper that turns Pods' negative oom_score_adj into 0 (this sandbox
        # forbids lowering it) as the default runtime, before dockerd starts: restarting dockerd
        # later would stop everyone's containers. Merged into /etc/docker/daemon.json.
        sh "$HERE/runc-no-oom-adj" --fnbuild-install || die "could not register the runc wrapper in /etc/docker/daemon.json"
        log "starting dockerd (log: $TMPD/dockerd.log)"
        # Detached from our stdout/stderr, so a caller reading our output is not kept waiting.
        setsid dockerd >"$TMPD/dockerd.log" 2>&1 </dev/null 9>&- &
    fi
    for _ in $(seq 1 60); do
        docker_answers && break
        sleep 0.5
    done
    docker_answers || { tail -30 "$TMPD/dockerd.log" >&2 2>/dev/null; die "dockerd did not answer within 30 s"; }
fi

# 3. Base images (cached; has its own lock).
flock -u 9
make_bases
