# syntax=docker/dockerfile:1
# soundwatch in a container, for amd64 and arm64 (Raspberry Pi 4/5 with a 64-bit OS, Jetson):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t soundwatch .
#   docker run -d --name soundwatch --restart unless-stopped \
#     --device /dev/snd --hostname shed-pi \
#     -v /srv/soundwatch/config:/etc/soundwatch:ro -v /srv/soundwatch/state:/var/lib/soundwatch \
#     -p 127.0.0.1:9464:9464 soundwatch
#   docker run --rm --device /dev/snd soundwatch devices      # which capture devices it sees
#
# Every install step is scripts/install-image.sh, which tests/test_deploy.py runs with the same
# arguments; this file only adds the user, the default config and how to start. See README
# "Running it for months".
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/soundwatch/bin:$PATH

# The checkout is mounted for the build only (BuildKit, the default since Docker 23; read-write
# as pip builds the wheel in place, the writes are thrown away), so no source lands in the image. No arch-specific steps: pip picks
# the amd64 or aarch64 wheels of onnxruntime and ai-edge-litert.
RUN --mount=type=bind,target=/src,rw \
    bash /src/scripts/install-image.sh --image /opt/soundwatch

# Unprivileged, in the audio group (gid 29 on Debian, Raspberry Pi OS and Ubuntu, the group
# that owns /dev/snd/* on the host) so `--device /dev/snd` is enough to capture.
RUN useradd --system --uid 10001 --gid audio --home-dir /var/lib/soundwatch \
        --shell /usr/sbin/nologin soundwatch \
    && install -d -o soundwatch -g audio -m 0750 /var/lib/soundwatch

COPY deploy/docker-config.yaml /etc/soundwatch/config.yaml

# Numeric, so the host (and Kubernetes' runAsNonRoot) can tell it is not root: soundwatch:audio.
USER 10001:29
WORKDIR /var/lib/soundwatch
VOLUME ["/var/lib/soundwatch"]
EXPOSE 9464

# Healthy while audio is being analysed: the metrics endpoint answers and its last analysed
# second is under 2 minutes old (edge/ops/health.py; slim images have no curl). The config must
# keep metrics on port 9464 for this; 0.0.0.0 in the image's config so `-p` can publish it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/soundwatch/bin/python", "-m", "edge.ops.health", "--max-age", "120"]

# SIGTERM (docker stop) closes open events and flushes outputs and the MQTT outbox.
ENTRYPOINT ["soundwatch"]
CMD ["run", "-c", "/etc/soundwatch/config.yaml"]
