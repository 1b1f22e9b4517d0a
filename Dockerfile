# The same command as the README's first one, without the example upstream:
# mount or bake your own config at /app/config/gateway.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
COPY lua ./lua
COPY config ./config
RUN pip install --disable-pip-version-check . \
    && useradd --system --uid 10001 --home /app gateway \
    && mkdir -p /app/var && chown gateway /app/var
ENV GATEWAY_LUA_DIR=/app/lua GATEWAY_HOST=0.0.0.0
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
CMD ["gateway", "run", "--config", "config/gateway.yaml"]
