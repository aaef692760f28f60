# nginx from Debian's nginx-light package, for running docker-compose.yml where no registry is reachable
# (deploy/podman/images.sh stack; Docker users get nginx:1.28-alpine from the compose file instead).
# It behaves like the official image where the compose file relies on it: configuration from
# /etc/nginx/conf.d, /etc/nginx/templates and /docker-entrypoint.d (deploy/podman/nginx-entrypoint.sh), logs on
# stdout/stderr, graceful stop on SIGQUIT, wget for the healthcheck.
ARG BASE=localhost/translator-base-nginx:bookworm
FROM ${BASE}
COPY nginx-entrypoint.sh /docker-entrypoint.sh
# Debian's default site (port 80) goes; access and error logs go to the container's output, as in the
# official image.
RUN rm -f /etc/nginx/sites-enabled/default \
 && mkdir -p /docker-entrypoint.d \
 && mkdir -p /etc/nginx/templates \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
