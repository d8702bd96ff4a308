# The fnbuild builder image: what a Function's build Job runs (`fnbuild build /src ...`), and the
# controller's image too (`fnbuild-controller run`, see `fnbuild-controller manifests --image`).
#
# BASE must provide what dependency installs need, on PATH:
#   node and npm                     (Node runtimes' package.json)
#   python3.12 and pip3.12 (or pip3) (python312's requirements.txt; pip of the runtime's own Python
#                                     version installs exactly what the function's Python loads)
#   git (with git-remote-https) and ssh  (`fnbuild build --git-url`)
#   /bin/sh, a CA bundle at /etc/ssl/certs/ca-certificates.crt, a writable /tmp (1777)
# No public registry is assumed: tests/support/make-builder-image.sh makes such a base from this
# machine's own node, npm, CPython 3.12 and pip, and builds this file with
#   docker build --build-arg BASE=fnbuild-local/builder-base:KEY -f Dockerfile.builder CONTEXT
# where CONTEXT holds the `fnbuild` and `fnbuild-controller` binaries (release builds, stripped)
# and runtime-libraries/, the runtimes' library layers (`fnbuild runtime-libraries --output
# CONTEXT/runtime-libraries`), which fnbuild finds beside itself
# (<prefix>/share/fnbuild/runtime-libraries): build Jobs never download them.
#
# It runs as uid 1000 with every writable path under /tmp, so a read-only root filesystem with an
# emptyDir at /tmp works, as the controller's build Jobs have it.
ARG BASE
FROM ${BASE}

COPY fnbuild fnbuild-controller /usr/local/bin/
COPY runtime-libraries /usr/local/share/fnbuild/runtime-libraries

ENV PATH=/usr/local/bin:/usr/bin:/bin \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    npm_config_cache=/tmp/.npm \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8

# Everything a build needs is there and runs as the unprivileged user.
USER 1000:1000
RUN fnbuild --version && fnbuild-controller --version && node --version && npm --version && pip3.12 --version

WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/fnbuild"]
CMD ["--help"]
