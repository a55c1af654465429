# syntax=docker/dockerfile:1
#
# l2tp-ipsec-exporter in a container, next to charon on the VPN server.
#
#   docker build -t l2tp-ipsec-exporter .
#
# It needs the host's network namespace (the kernel's XFRM/L2TP/ppp state lives there) and
# charon's VICI socket. The socket is srwxrwx--- owned by charon's user and group, so the
# container user joins that group (see docs/security.md for giving charon a group of its
# own instead of root's):
#
#   docker run -d --name l2tp-ipsec-exporter --restart unless-stopped \
#     --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
#     --group-add "$(stat -c %g /var/run/charon.vici)" \
#     -v /var/run/charon.vici:/var/run/charon.vici \
#     l2tp-ipsec-exporter
#
# Netlink dumps of XFRM states/policies and L2TP tunnels/sessions also need CAP_NET_ADMIN.
# Docker gives a non-root user no capabilities (it sets no ambient ones), so for those
# collectors run as uid 0 holding that one capability and nothing else:
#
#   docker run ... --user 0:0 --cap-drop ALL --cap-add NET_ADMIN ...
#
# Without it the exporter still serves; the collectors that lack the capability say so in
# l2tp_ipsec_exporter_collector_success and one log line (docs/security.md).
# TLS and basic auth: mount a web config file and pass --web.config.file=/etc/...yml.
# File descriptors: the exporter raises its soft limit to what --web.max-connections needs
# and refuses to start when the hard limit is lower; Docker's default hard limit is far
# above the ~720 the defaults need (else: docker run --ulimit nofile=8192:8192 ...).

# Pinned to a patch release; pin the digest too (python:3.11.11-slim-bookworm@sha256:…)
# where the build is meant to be reproducible.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/l2tp-ipsec-exporter
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN /opt/l2tp-ipsec-exporter/bin/pip install --no-cache-dir . \
    && find /opt/l2tp-ipsec-exporter -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="l2tp-ipsec-exporter" \
      org.opencontainers.image.description="Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI, kernel L2TP/ppp/XFRM, probes)" \
      org.opencontainers.image.licenses="MIT"
RUN useradd --system --no-log-init --uid 9945 --user-group --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin l2tp-ipsec-exporter
COPY --from=build /opt/l2tp-ipsec-exporter /opt/l2tp-ipsec-exporter
ENV PATH=/opt/l2tp-ipsec-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:9945/-/healthy
USER 9945:9945
EXPOSE 9945
# Any answer below 500 is a live daemon: 401 is what /-/healthy says behind basic auth.
# Set HEALTHCHECK_URL for another port or https (the certificate is not checked here).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.error, urllib.request\ntry:\n    urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context())\nexcept urllib.error.HTTPError as err:\n    sys.exit(err.code >= 500)\nexcept Exception as err:\n    sys.exit(str(err))"]
ENTRYPOINT ["l2tp-ipsec-exporter"]
CMD ["--vici.socket", "unix:///var/run/charon.vici"]
