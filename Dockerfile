# lyoncam capture daemon. Build: `docker build -t lyoncam .`  Run: see docs/docker.md.
# Debian's python3 in both stages (same path, same version), so the venv built in the first
# stage runs as is in the second, which has no pip, no venv module and no compiler.

FROM debian:bookworm-slim AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/lyoncam
# Only where PyPI is reached through a mirror or a TLS-inspecting proxy: pass its index and
# CA as build arg / secret (docs/docker.md). Absent, pip uses pypi.org with Debian's CA bundle.
ARG PIP_INDEX_URL
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml /src/
# The cache mount keeps downloaded wheels in the builder's cache (not in the image) for the
# next time the dependencies change.
RUN --mount=type=secret,id=cacert,required=false --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' > /src/requirements.txt \
 && /opt/lyoncam/bin/pip install --disable-pip-version-check -r /src/requirements.txt
COPY README.md /src/
COPY lyoncam_daemon /src/lyoncam_daemon
RUN --mount=type=secret,id=cacert,required=false \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && /opt/lyoncam/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /src \
 && /opt/lyoncam/bin/pip uninstall -y --disable-pip-version-check pip setuptools

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin lyoncam \
 && mkdir -p /data /config \
 && chown lyoncam:lyoncam /data
COPY --from=builder /opt/lyoncam /opt/lyoncam
# The catalogue's cameras, so the image captures something out of the box; mount your own.
COPY cameras.yaml /config/cameras.yaml
ENV PATH=/opt/lyoncam/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /data
VOLUME /data
STOPSIGNAL SIGTERM
# The daemon's own liveness: its heartbeat in /data/.lyoncam/health.json, then the /healthz
# it recorded there, on whatever port it listens (lyoncam health).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["lyoncam", "health", "--data-dir", "/data"]
ENTRYPOINT ["lyoncam"]
CMD ["run", "--config", "/config/cameras.yaml", "--data-dir", "/data", "--log-format", "json"]
