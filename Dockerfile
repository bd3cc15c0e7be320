# Multi-stage build of the one hookline binary; docker-compose.yml runs it as ingress and
# worker from this image. The runtime image runs as uid/gid 10001 (never root) and writes
# only under /var/lib/hookline/data, so the compose file can make its root read-only.
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hookline

FROM debian:bookworm-slim
# curl is for the compose healthchecks (exec form: no shell involved).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hookline \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hookline --shell /usr/sbin/nologin hookline \
 && mkdir -p /var/lib/hookline/data && chown -R 10001:10001 /var/lib/hookline
COPY --from=build /src/target/release/hookline /usr/local/bin/hookline
COPY config/hookline.toml /etc/hookline/hookline.toml
# Numeric, so a runtime that checks "not root" (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
WORKDIR /var/lib/hookline
ENV HOOKLINE_CONFIG=/etc/hookline/hookline.toml \
    HOOKLINE__STORAGE__DIR=/var/lib/hookline/data
VOLUME ["/var/lib/hookline/data"]
EXPOSE 8080 9090 9091
ENTRYPOINT ["hookline"]
CMD ["run"]
