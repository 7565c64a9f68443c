# syntax=docker/dockerfile:1
# qwen2-audio-server, configured only by QWEN2_AUDIO_* environment variables (README: Configuration).
#   GPU image: docker build -t qwen2-audio-server .
#   CPU image: docker build --build-arg VARIANT=cpu -t qwen2-audio-server:cpu .
# The Hugging Face cache is the /cache volume: mount a named volume there and the 16 GB model downloads once.

ARG VARIANT=gpu

# torch 2.13.0's PyPI wheel is built for CUDA 13.0 and brings the CUDA libraries as pip packages, so the image only
# needs CUDA 13.0's base: its driver check (NVIDIA_REQUIRE_CUDA) and the variables the NVIDIA container toolkit
# reads. The -runtime flavour would add a second, unused copy of cuBLAS and friends (GBs).
FROM nvidia/cuda:13.0.1-base-ubuntu24.04 AS os-gpu
# The same Ubuntu release, so both variants run the same Python (3.12) and the same install steps.
FROM ubuntu:24.04 AS os-cpu

# hadolint ignore=DL3006
FROM os-${VARIANT} AS python
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu drops superseded package versions from its archive with each security update, so exact apt pins would
# break rebuilds; the base image tag pins the release, the Python packages are pinned below.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /cache/huggingface \
    && chown -R app:app /cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/qwen2-audio-server
COPY docker/constraints.txt docker/

FROM python AS torch-gpu
# PyPI's Linux wheel is the CUDA build; it pins its CUDA packages, the constraints pin the rest
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c docker/constraints.txt torch==2.13.0

FROM python AS torch-cpu
# only torch itself from PyTorch's CPU index; its dependencies come from PyPI with the project's, pinned
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c docker/constraints.txt --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# hadolint ignore=DL3006
FROM torch-${VARIANT} AS server
# (inherited from the python stage; repeated because linters cannot follow a stage chosen by a build argument)
WORKDIR /opt/qwen2-audio-server
COPY pyproject.toml README.md ./
COPY server server/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c docker/constraints.txt ".[quant]" \
    && pip check
COPY docker/healthcheck.py docker/
# The code stays root's (read-only to the server); the cache is the server's. HOST 0.0.0.0: reachable through
# the published port. Everything else is a QWEN2_AUDIO_* variable given at `docker run -e` or in compose.yaml.
ENV HF_HOME=/cache/huggingface \
    QWEN2_AUDIO_HOST=0.0.0.0 \
    QWEN2_AUDIO_PORT=8000
VOLUME ["/cache"]
USER 10001:10001
EXPOSE 8000
# Healthy once /ready answers 200: the model is loaded and the engine runs. The start period covers a first
# start that downloads 16 GB; checks every 10 s within it make the container healthy as soon as it is ready.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 --start-period=30m --start-interval=10s \
    CMD ["python", "/opt/qwen2-audio-server/docker/healthcheck.py"]
ENTRYPOINT ["qwen2-audio-server"]
CMD ["serve"]
