# Sourced by deploy/podman/images.sh and tests/deploy/run.py: the podman settings these machines need,
# given to podman through CONTAINERS_CONF for our commands only (no file under /etc or ~ is written).
#
# - runc as the OCI runtime: Debian's default crun fails here with
#   `setrlimit RLIMIT_NOFILE: Operation not permitted`.
# - Explicit nofile/nproc limits: podman as root asks for 1048576 of each unless told otherwise, and
#   without CAP_SYS_RESOURCE (a sandboxed root) runc cannot raise them: `error setting rlimit type 7`
#   (nofile) or `type 6` (nproc). The limits below are this shell's hard limits, nproc at most 32768
#   (measured: podman itself runs with 32768 here, and anything above fails).
#
# A CONTAINERS_CONF already set is kept as it is: point it at your own file to override all of this.
# (podman reads only that file then, instead of /etc/containers/containers.conf.)

if [ -z "${CONTAINERS_CONF:-}" ]; then
    _translator_conf_dir="${TMPDIR:-/tmp}/translator-podman-$(id -u)"
    mkdir -p "$_translator_conf_dir"
    # Hard limits from /proc (ulimit's options differ between dash and bash).
    _nofile=$(awk '/^Max open files/ {print $5}' /proc/self/limits)
    _nproc=$(awk '/^Max processes/ {print $4}' /proc/self/limits)
    [ "$_nofile" = unlimited ] && _nofile=1048576
    { [ "$_nproc" = unlimited ] || [ "$_nproc" -gt 32768 ]; } && _nproc=32768
    cat > "$_translator_conf_dir/containers.conf" <<EOF
# Written by deploy/podman/env.sh for the translator's podman commands.
[containers]
default_ulimits = ["nofile=$_nofile:$_nofile", "nproc=$_nproc:$_nproc"]

[engine]
runtime = "runc"
EOF
    export CONTAINERS_CONF="$_translator_conf_dir/containers.conf"
    unset _translator_conf_dir _nofile _nproc
fi
