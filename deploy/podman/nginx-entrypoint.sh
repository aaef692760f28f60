#!/bin/sh
# The official nginx image's entrypoint contract, for the Debian-built image (deploy/podman/nginx.Dockerfile),
# so that docker-compose.yml runs the same with either image:
# - NGINX_ENTRYPOINT_LOCAL_RESOLVERS set: NGINX_LOCAL_RESOLVERS becomes the nameservers of /etc/resolv.conf
#   (Docker's 127.0.0.11, podman's aardvark-dns on the network's gateway);
# - every /etc/nginx/templates/*.template is written to /etc/nginx/conf.d/ with envsubst, replacing only
#   variables that exist in the environment (nginx's own $variables stay).
set -eu

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
