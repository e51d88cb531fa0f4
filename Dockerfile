# syntax=docker/dockerfile:1
# ledgergate's container image. Two stages: the first builds wheels for ledgergate and everything
# it needs; the second installs them into a virtual environment and keeps no compiler, no pip cache
# and no source tree. It runs as a numeric non-root user (so Kubernetes' runAsNonRoot can check it),
# works with a read-only root filesystem (data on the /var/lib/ledgergate volume; nothing else is
# written), and holds no secret: the config comes from a ConfigMap at /etc/ledgergate, the signing
# key and upstream credentials from Secrets (see docs/kubernetes.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/ledgergate/bin:$PATH
COPY --from=build /wheels /tmp/wheels
# Byte-compiled at build time: with a read-only root filesystem nothing can write .pyc files later.
RUN python -m venv /opt/ledgergate \
 && /opt/ledgergate/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels ledgergate \
 && /opt/ledgergate/bin/pip uninstall -y pip \
 && rm -rf /tmp/wheels \
 && python -m compileall -q /opt/ledgergate \
 && groupadd --system --gid 10001 ledgergate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ledgergate --no-create-home \
            --shell /usr/sbin/nologin ledgergate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ledgergate \
 && install -d -m 0755 /etc/ledgergate
VOLUME ["/var/lib/ledgergate"]
WORKDIR /var/lib/ledgergate
USER 10001:10001
EXPOSE 8080
# The config must listen on 0.0.0.0:8080 (deploy/kubernetes/base does); curl is not in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["ledgergate"]
CMD ["serve", "--config", "/etc/ledgergate/ledgergate.yaml"]
