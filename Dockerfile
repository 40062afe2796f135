# The gateway as a container: two listeners, proxy :8080 (agents) and admin :8081
# (operators). Mount the settings at /etc/gateway/gateway.yaml and the policies
# at /etc/gateway/policies; see docker-compose.yml and deploy/README.md.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package needs, so editing tests or docs does not rebuild this layer.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    GATEWAY_PROXY__HOST=0.0.0.0 \
    GATEWAY_ADMIN__HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --create-home \
        --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/gateway/policies
COPY --from=build /opt/venv /opt/venv
# The working directory is the only writable place: an embedded SQLite journal
# (the default database_url, ./gateway.db) lands here; mount a volume to keep it.
WORKDIR /var/lib/gateway
USER gateway

EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/v1/health', timeout=4)"]

ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml"]
