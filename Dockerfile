# EmotiTrack image: the API by default; the same image runs `emotitrack train|monitor` and
# `mlflow server` in docker-compose.yml.

# --- build: a virtualenv with the runtime lock and the project, nothing else ---
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
WORKDIR /src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install uv==0.13.9
COPY requirements-runtime.lock ./
# Bytecode compiled now: the image runs with PYTHONDONTWRITEBYTECODE, so without it every start
# compiles mlflow, sklearn & co. from source (start-to-ready ~9 s instead of ~3 s).
RUN /opt/venv/bin/uv pip sync --compile-bytecode --python /opt/venv/bin/python --require-hashes requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY emotitrack ./emotitrack
COPY training ./training
COPY serving ./serving
COPY monitoring ./monitoring
RUN /opt/venv/bin/uv pip install --compile-bytecode --python /opt/venv/bin/python --no-deps . \
    && /opt/venv/bin/uv pip uninstall --python /opt/venv/bin/python uv

# --- runtime: slim base, the virtualenv, a non-root numeric user ---
FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    EMOTITRACK_PREDICTION_LOG_URL=sqlite:////data/predictions.db \
    EMOTITRACK_SPILL_DIR=/data/prediction-spill
COPY --from=build /opt/venv /opt/venv
# Every folder docker-compose mounts a named volume on, owned by the user the services run as:
# a new volume copies its mount point's owner, and Docker creates missing ones as root.
RUN mkdir /data /mlartifacts /mlauth /reports \
    && chown 10001:10001 /data /mlartifacts /mlauth /reports
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# `emotitrack serve` binds $PORT; uvicorn is the production server (graceful SIGTERM).
CMD ["emotitrack", "serve", "--host", "0.0.0.0"]
