#!/bin/sh
# The official nginx image's entrypoint contract, for the Debian-built image (deploy/podman/nginx.Dockerfile),
# so that docker-compose.yml runs the same with either image:
# - /docker-entrypoint.d/: executable *.envsh files are sourced and executable *.sh files run, in version
#   order (docker-compose.yml mounts deploy/nginx/15-translator-resolver.envsh there);
# - NGINX_ENTRYPOINT_LOCAL_RESOLVERS set: NGINX_LOCAL_RESOLVERS becomes every nameserver of /etc/resolv.conf;
# - every /etc/nginx/templates/*.template is written to /etc/nginx/conf.d/ with envsubst, replacing only
#   variables that exist in the environment (nginx's own $variables stay).
set -eu

if [ -d /docker-entrypoint.d ]; then
    for script in $(find /docker-entrypoint.d/ -follow -type f -print | sort -V); do
        case "$script" in
        *.envsh)
            if [ -x "$script" ]; then echo "$0: sourcing $script" >&2; . "$script"
            else echo "$0: ignoring $script, not executable" >&2; fi ;;
        *.sh)
            if [ -x "$script" ]; then echo "$0: running $script" >&2; "$script"
            else echo "$0: ignoring $script, not executable" >&2; fi ;;
        esac
    done
fi

if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
    NGINX_LOCAL_RESOLVERS=$(awk 'BEGIN{ORS=" "} $1=="nameserver" {if ($2 ~ ":") {print "["$2"]"} else {print $2}}' /etc/resolv.conf)
    export NGINX_LOCAL_RESOLVERS
fi

if [ -d /etc/nginx/templates ]; then
    defined=$(printf '${%s} ' $(awk 'END { for (name in ENVIRON) print name }' </dev/null))
    for template in /etc/nginx/templates/*.template; do
        [ -f "$template" ] || continue
        output="/etc/nginx/conf.d/$(basename "$template" .template)"
        envsubst "$defined" < "$template" > "$output"
        echo "$0: $template → $output" >&2
    done
fi

exec "$@"
