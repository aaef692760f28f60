#!/bin/sh
# Builds the container images with podman on a machine that reaches no image registry (README.md, "Deploy"):
#
#   deploy/podman/images.sh translator     the service image (`make image`): deploy/Dockerfile on a Debian base
#   deploy/podman/images.sh stack          the nginx and Prometheus images the compose test runs
#   deploy/podman/images.sh all            both
#
# Base images come from Debian packages: mmdebstrap writes a root file system as a tar (the host's apt
# sources, so the same mirror as `apt-get`), `podman import` makes it an image. A base is rebuilt only when
# missing or when its package list changed (REBUILD_BASE=1 forces it, e.g. for security updates).
# deploy/Dockerfile is built unchanged (Docker users build it from python:3.11-slim); here its
# PYTHON_IMAGE build argument names the Debian base. pip inside the build reaches the package index with
# this machine's pip settings and CA bundle (deploy/podman/pip_conf.py), mounted read-only for the build
# only: no index address is written into the repository or the image.
#
# Environment: IMAGE (default translator:0.1.0-cpu, the tag docker-compose.yml and deploy/k8s name),
# IMAGE_SOURCE (worktree: the files as they are, like `docker build .`; or a git revision such as HEAD:
# the paths .dockerignore lets in, exported from that commit, so edits in progress do not reach the
# image), DEBIAN_SUITE (bookworm), APT_SOURCES (the host's apt sources file), PODMAN (podman).
set -eu
cd "$(dirname "$0")/../.."
. deploy/podman/env.sh

PODMAN=${PODMAN:-podman}
SUITE=${DEBIAN_SUITE:-bookworm}
IMAGE=${IMAGE:-translator:0.1.0-cpu}
NGINX_IMAGE=${NGINX_IMAGE:-localhost/translator-nginx:$SUITE}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-localhost/translator-prometheus:$SUITE}
WORK=build/images

# The packages of each base. python-is-python3: deploy/Dockerfile runs `python`; passwd: useradd;
# libstdc++6: numpy, onnxruntime and sentencepiece link it (python:3.11-slim has it through apt).
PYTHON_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates,passwd,libstdc++6"
# The builder stage's base: the same Python and a C++ compiler for the engine's attention kernels (setup.py).
BUILDER_PACKAGES="$PYTHON_PACKAGES,g++"
# wget: the compose healthchecks (the official nginx and Prometheus images have busybox's);
# gettext-base: envsubst for nginx's templates (deploy/podman/nginx-entrypoint.sh).
NGINX_PACKAGES="nginx-light,gettext-base,wget,ca-certificates"
PROMETHEUS_PACKAGES="prometheus,wget,ca-certificates"

log() { printf '== %s\n' "$*" >&2; }

# image_id TAG → the image's id, or nothing
image_id() { $PODMAN image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# drop_superseded OLD_ID TAG: after a rebuild, the image the tag named before is removed (its own layers,
# chiefly the runtime stage's copy of the virtualenv, would pile up with every build); kept when a
# container still uses it. The builder stage's intermediate images stay: they are the build cache.
drop_superseded() {
    if [ -n "$1" ] && [ "$1" != "$(image_id "$2")" ]; then
        $PODMAN rmi "$1" >/dev/null 2>&1 && log "removed the previous $2 (${1%"${1#????????????}"})" || true
    fi
}

apt_sources() {
    if [ -n "${APT_SOURCES:-}" ]; then echo "$APT_SOURCES"; return; fi
    for file in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -s "$file" ]; then echo "$file"; return; fi
    done
    echo "no apt sources found: set APT_SOURCES to a sources file" >&2
    exit 1
}

# debian_base NAME PACKAGES → localhost/translator-base-NAME:SUITE
debian_base() {
    name=$1 packages=$2 tag="localhost/translator-base-$1:$SUITE"
    if [ "${REBUILD_BASE:-0}" != 1 ] && $PODMAN image exists "$tag" \
        && [ "$($PODMAN image inspect --format '{{index .Labels "org.translator.packages"}}' "$tag")" = "$packages" ]; then
        log "$tag exists (packages: $packages)"
        return
    fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }
    mkdir -p "$WORK"
    log "mmdebstrap $SUITE + $packages → $tag"
    # essential + the packages (no apt: nothing installs packages at run time); no manuals, locales or
    # documentation except the copyright files.
    mmdebstrap --quiet --variant=essential --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "$SUITE" "$WORK/$name.tar" "$(apt_sources)"
    previous=$(image_id "$tag")
    $PODMAN import --quiet --change "LABEL org.translator.packages=$packages" \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "$WORK/$name.tar" "$tag" >/dev/null
    rm -f "$WORK/$name.tar"
    drop_superseded "$previous" "$tag"
}

# The build context: "." or a directory holding a commit's copy of what .dockerignore lets in.
context() {
    source=${IMAGE_SOURCE:-worktree}
    if [ "$source" = worktree ]; then echo .; return; fi
    revision=$(git rev-parse --verify "$source^{commit}")
    directory="$WORK/context"
    rm -rf "$directory" && mkdir -p "$directory"
    paths=".dockerignore deploy/Dockerfile"
    for path in $(sed -n 's/^!//p' .dockerignore); do
        # Build outputs (build/models-fp16) are not in git: the CUDA image needs them, this one does not.
        [ -n "$(git ls-tree -r --name-only "$revision" -- "$path" | head -1)" ] && paths="$paths $path"
    done
    # shellcheck disable=SC2086 # one pathspec per word
    git archive --format=tar "$revision" -- $paths | tar -x -C "$directory"
    log "build context: $paths at $(git rev-parse --short "$revision")"
    echo "$directory"
}

# The commit the image is built from; "-dirty" when the work tree's copy of the image's files differs.
revision_label() {
    source=${IMAGE_SOURCE:-worktree}
    if [ "$source" != worktree ]; then git rev-parse --verify "$source^{commit}"; return; fi
    # shellcheck disable=SC2046
    dirty=$(git status --porcelain -- .dockerignore deploy/Dockerfile $(sed -n 's/^!//p' .dockerignore) 2>/dev/null)
    echo "$(git rev-parse HEAD 2>/dev/null || echo unknown)${dirty:+-dirty}"
}

translator() {
    debian_base python "$PYTHON_PACKAGES"
    debian_base python-build "$BUILDER_PACKAGES"
    build_context=$(context)
    pip_dir=$(mktemp -d)
    trap 'rm -rf "$pip_dir"' EXIT
    "${PYTHON:-python3}" deploy/podman/pip_conf.py "$pip_dir"
    previous=$(image_id "$IMAGE")
    log "podman build deploy/Dockerfile → $IMAGE"
    # --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
    $PODMAN build --format docker --network host \
        --build-arg PYTHON_IMAGE="localhost/translator-base-python:$SUITE" \
        --build-arg BUILDER_IMAGE="localhost/translator-base-python-build:$SUITE" \
        -v "$pip_dir/pip.conf:/etc/pip.conf:ro" -v "$pip_dir/ca.pem:/etc/pip-ca.pem:ro" \
        --label org.opencontainers.image.revision="$(revision_label)" \
        -f "$build_context/deploy/Dockerfile" -t "$IMAGE" "$build_context"
    drop_superseded "$previous" "$IMAGE"
    rm -rf "$pip_dir"
    trap - EXIT
}

stack() {
    debian_base nginx "$NGINX_PACKAGES"
    debian_base prometheus "$PROMETHEUS_PACKAGES"
    previous=$(image_id "$NGINX_IMAGE")
    log "podman build nginx → $NGINX_IMAGE"
    $PODMAN build --format docker --build-arg BASE="localhost/translator-base-nginx:$SUITE" \
        -f deploy/podman/nginx.Dockerfile -t "$NGINX_IMAGE" deploy/podman
    drop_superseded "$previous" "$NGINX_IMAGE"
    previous=$(image_id "$PROMETHEUS_IMAGE")
    log "podman build prometheus → $PROMETHEUS_IMAGE"
    $PODMAN build --format docker --build-arg BASE="localhost/translator-base-prometheus:$SUITE" \
        -f deploy/podman/prometheus.Dockerfile -t "$PROMETHEUS_IMAGE" deploy/podman
    drop_superseded "$previous" "$PROMETHEUS_IMAGE"
}

[ $# -gt 0 ] || set -- translator
for target in "$@"; do
    case "$target" in
    translator) translator ;;
    stack) stack ;;
    all) translator; stack ;;
    *) echo "usage: $0 [translator|stack|all]..." >&2; exit 2 ;;
    esac
done
