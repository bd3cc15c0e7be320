# Multi-stage build of the one hookline binary; docker-compose.yml runs it twice
# (ingress and worker) from this image.
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hookline

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/hookline hookline \
 && mkdir -p /var/lib/hookline/data && chown -R hookline /var/lib/hookline
COPY --from=build /src/target/release/hookline /usr/local/bin/hookline
COPY config/hookline.toml /etc/hookline/hookline.toml
USER hookline
WORKDIR /var/lib/hookline
ENV HOOKLINE_CONFIG=/etc/hookline/hookline.toml \
    HOOKLINE__STORAGE__DIR=/var/lib/hookline/data
EXPOSE 8080 9091
ENTRYPOINT ["hookline"]
CMD ["run"]
