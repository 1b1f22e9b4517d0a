# The gateway image, built from the wheel: the installed package carries its Lua scripts and plugins, so the
# final stage holds no source checkout. Mount or bake your own config at /app/config/gateway.yaml (the one
# copied here is the embedded default, which reads GATEWAY_DEV_KEY, SHORTENER_SECRET and WEBHOOK_SECRET).
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY lua ./lua
COPY plugins ./plugins
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home /app gateway \
    && mkdir -p /app/var && chown gateway /app/var
WORKDIR /app
COPY config ./config
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
CMD ["gateway", "run", "--config", "config/gateway.yaml"]
