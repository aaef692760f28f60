# Prometheus from Debian's prometheus package, for running docker-compose.yml where no registry is
# reachable (deploy/podman/images.sh stack; Docker users get prom/prometheus from the compose file).
# Like the official image: the binary is the entrypoint (compose passes the flags), it runs as an
# unprivileged user and keeps its data in /prometheus; wget for the healthcheck.
ARG BASE=localhost/translator-base-prometheus:bookworm
FROM ${BASE}
RUN mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
