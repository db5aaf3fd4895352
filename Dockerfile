# EmotiTrack images, one per install profile (docs/install-profiles.md):
#   api  (the default: the last stage) the API from requirements-serving.lock: no Evidently,
#        matplotlib, scikit-learn or MLflow tracking server
#   jobs (--target jobs) every part from requirements-runtime.lock: docker-compose.yml runs
#        `emotitrack train|monitor` and `mlflow server` on it
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- uv in the virtualenv each build stage fills (removed once the project is in) ---
FROM ${PYTHON_IMAGE} AS uv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
WORKDIR /src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install uv==0.13.9

# --- the project as a wheel, built once for both images ---
FROM uv AS wheel
COPY pyproject.toml README.md ./
COPY emotitrack ./emotitrack
COPY training ./training
COPY serving ./serving
COPY monitoring ./monitoring
RUN /opt/venv/bin/uv build --wheel --out-dir /wheels .

# --- one virtualenv per image: its lock exactly (hashes checked), then the wheel alone ---
# Bytecode compiled now: the images run with PYTHONDONTWRITEBYTECODE, so without it every start
# compiles the dependencies from source.
FROM uv AS venv-jobs
COPY requirements-runtime.lock ./
RUN /opt/venv/bin/uv pip sync --compile-bytecode --python /opt/venv/bin/python --require-hashes requirements-runtime.lock
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/uv pip install --compile-bytecode --python /opt/venv/bin/python --no-deps /wheels/*.whl \
    && /opt/venv/bin/uv pip uninstall --python /opt/venv/bin/python uv

FROM uv AS venv-api
COPY requirements-serving.lock ./
RUN /opt/venv/bin/uv pip sync --compile-bytecode --python /opt/venv/bin/python --require-hashes requirements-serving.lock
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/uv pip install --compile-bytecode --python /opt/venv/bin/python --no-deps /wheels/*.whl \
    && /opt/venv/bin/uv pip uninstall --python /opt/venv/bin/python uv

# --- what both images share: slim base, settings, volumes for a non-root numeric user ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    EMOTITRACK_PREDICTION_LOG_URL=sqlite:////data/predictions.db \
    EMOTITRACK_SPILL_DIR=/data/prediction-spill
# Every folder docker-compose mounts a named volume on, owned by the user the services run as:
# a new volume copies its mount point's owner, and Docker creates missing ones as root.
RUN mkdir /data /mlartifacts /mlauth /reports \
    && chown 10001:10001 /data /mlartifacts /mlauth /reports
WORKDIR /data
VOLUME ["/data"]

FROM runtime AS jobs
COPY --from=venv-jobs /opt/venv /opt/venv
USER 10001:10001
CMD ["emotitrack", "--help"]

FROM runtime AS api
COPY --from=venv-api /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# `python -m serving`, not `emotitrack serve`: the `emotitrack` command imports every part.
# It binds $PORT; uvicorn is the production server (graceful SIGTERM).
CMD ["python", "-m", "serving", "--host", "0.0.0.0"]
