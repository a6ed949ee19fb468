# dmds in a container: `dmds serve` with its embedded SQLite store in the volume /var/lib/dmds.
# Not built by CI (no container engine there). docs/operations.md, "Containers", says how to run it.
#   docker build -t dmds .
#   docker run -d --name dmds -p 7000:7000 -p 7001:7001 -p 7002:7002 -v dmds-data:/var/lib/dmds dmds

FROM node:20-slim AS web
WORKDIR /build
COPY web/package.json web/package-lock.json web/
RUN cd web && npm ci --no-audit --no-fund --loglevel=error
COPY web web
RUN mkdir -p src/dmds/web && cd web && node build.mjs

FROM python:3.11-slim
# No root at run time; a fixed uid so that a volume's ownership survives a rebuild.
RUN useradd --system --uid 10001 --home-dir /var/lib/dmds --create-home --shell /usr/sbin/nologin dmds
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src src
COPY --from=web /build/src/dmds/web/static src/dmds/web/static
RUN pip install --no-cache-dir . && rm -rf /app/src
USER dmds
VOLUME /var/lib/dmds
# classic, session, web client + session over WebSocket
EXPOSE 7000 7001 7002
ENV DMDS_DATA_DIR=/var/lib/dmds
# SIGTERM is the graceful stop (docker stop sends it, then SIGKILL after 10 s by default: keep
# --stop-timeout-s below that, or raise docker's with --stop-timeout).
STOPSIGNAL SIGTERM
# The admin port (127.0.0.1:7003 in the container) answers /healthz without the token.
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7003/healthz', timeout=2)"]
ENTRYPOINT ["dmds", "serve"]
CMD ["--stop-timeout-s", "8"]
