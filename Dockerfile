# The gateway as a container: two listeners, proxy :8080 (agents) and admin :8081
# (operators). Mount the settings at /etc/gateway/gateway.yaml and the policies
# at /etc/gateway/policies; see docker-compose.yml, deploy/kubernetes/ and
# deploy/README.md. `.ci/container-check` builds, runs and checks this file.

# -- build stage: everything that compiles or installs lives and dies here ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (an empty package and README in
# place of the real ones): editing the code or the README reuses this layer
# instead of downloading every dependency again.
COPY pyproject.toml ./
RUN mkdir gateway && touch gateway/__init__.py README.md \
    && pip install . && pip uninstall -y agent-gateway
# Then the gateway's own wheel, without touching the dependencies.
COPY README.md ./
COPY gateway ./gateway
# Installers and build tools do not ship: the venv ends with the gateway and its
# requirements only (`pip check` inside the image uses the base image's pip:
# /usr/local/bin/python3 -m pip --python /opt/venv/bin/python check).
RUN pip install --no-deps . \
    && pip check \
    && pip uninstall -y -q setuptools wheel \
    && python -m pip uninstall -y -q pip

# -- run stage: the slim base, a non-root user and the venv, nothing else ------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="agent-gateway" \
      org.opencontainers.image.description="HTTP gateway between AI agents and the APIs they change" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    GATEWAY_PROXY__HOST=0.0.0.0 \
    GATEWAY_ADMIN__HOST=0.0.0.0
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gateway --create-home \
        --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/gateway/policies
COPY --from=build /opt/venv /opt/venv
# The working directory is the only writable place: an embedded SQLite journal
# (the default database_url, ./gateway.db) lands here; mount a volume to keep it.
# With PostgreSQL the container runs with a read-only root filesystem.
WORKDIR /var/lib/gateway
USER 10001:10001

EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/v1/health', timeout=4)"]

ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml"]
