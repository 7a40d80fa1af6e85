# syntax=docker/dockerfile:1
# Images of the detection service (design.md §10), one target each:
#
#   docker build --target server -t gd-detect:server .   CPU server + clients (no torch)
#   docker build --target gpu    -t gd-detect:gpu .      CUDA + TensorRT + onnxruntime-gpu
#   docker build --target train  -t gd-detect:train .    training, export (torch)
#
# docker-compose.yml builds and runs them; docs/deploy.md explains a deployment.
# Lint: hadolint (tests/test_docker.py). Its ignores below: DL3008 / DL3013 (pin every apt / pip
# version): Debian versions move with the base image's tag and Python ones come from
# pyproject.toml; DL3064: GD_TOKENS_FILE is the path of the mounted secret, not a secret.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- server: build a virtual environment with the app, onnxruntime and the clients --------------
FROM ${PYTHON_IMAGE} AS server-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the server and the clients import: no training code, no torch.
COPY pyproject.toml README.md ./
COPY core/ core/
COPY synth/ synth/
COPY server/ server/
COPY clients/ clients/
# hadolint ignore=DL3013
RUN pip install ".[serve,client,realsense]"

# --- server: the slim runtime image --------------------------------------------------------
FROM ${PYTHON_IMAGE} AS server
# pyrealsense2 links libusb (uploads of .bag/.db3 recordings and the camera streamer).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gd \
    && mkdir /data && chown 10001 /data
COPY --from=server-build /opt/venv /opt/venv
COPY models/default/ /app/models/default/
COPY models/default-fullframe/ /app/models/default-fullframe/
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GD_MODEL=/app/models/default \
    GD_TOKENS_FILE=/run/secrets/gd_tokens \
    GD_DATA_DIR=/data \
    GD_PORT=8000
WORKDIR /app
USER 10001
EXPOSE 8000
# Liveness through the app itself; python's urllib because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GD_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["gd-serve", "--host", "0.0.0.0"]

# --- gpu: the same app on CUDA + TensorRT --------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core/ core/
COPY synth/ synth/
COPY server/ server/
COPY clients/ clients/
# `serve` brings the CPU onnxruntime; onnxruntime-gpu provides the same module, so it must be
# the only one installed.
# hadolint ignore=DL3013
RUN pip install ".[serve,gpu,client,realsense]" \
    && pip uninstall -y onnxruntime \
    && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.18"

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gd \
    && mkdir /data && chown 10001 /data
COPY --from=gpu-build /opt/venv /opt/venv
COPY models/default/ /app/models/default/
COPY models/default-fullframe/ /app/models/default-fullframe/
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GD_MODEL=/app/models/default \
    GD_TOKENS_FILE=/run/secrets/gd_tokens \
    GD_DATA_DIR=/data \
    GD_PORT=8000 \
    GD_DEVICE=auto
WORKDIR /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GD_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["gd-serve", "--host", "0.0.0.0"]

# --- train: dataset preparation, training, evaluation, export (torch) -------------------------
FROM ${PYTHON_IMAGE} AS train
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --create-home --shell /bin/bash gd
WORKDIR /app
COPY . .
# hadolint ignore=DL3013
RUN pip install ".[train]"
# data/, cache/ and runs/ under /app are volumes (docker-compose.yml, profile train).
USER 10001
ENTRYPOINT ["gd-train"]
CMD ["--help"]
