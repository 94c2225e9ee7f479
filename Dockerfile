# kv in a container: `docker run -v DIR:/data:ro -p 8000:8000 kv:dev /data/FILE`.
#
#   docker build -t kv:dev .     # anywhere with internet: python:3.11-slim-bookworm, packages from PyPI
#   make image                   # here: a Debian base made with debootstrap, packages from a host wheelhouse
#
# BASE_IMAGE: any Debian-based image with python3 >= 3.11 and python3-venv.
# BUILD_IMAGE: the same image, or the same plus a C compiler and Python headers
# (the build stage installs what is missing with apt-get). Both stages must have
# python3 at the same path: the build stage's venv is copied as it is.
# Written for both the classic builder and BuildKit (no RUN --mount, no
# COPY --chmod, no syntax line: nothing to pull).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=${BASE_IMAGE}

# -- build: compile the C speedups, build wheels, install them into a venv ------------------
FROM ${BUILD_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN set -eu; \
    need=""; \
    command -v gcc >/dev/null || need="gcc libc6-dev"; \
    inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
    [ -f "$inc/Python.h" ] || need="$need python3-dev"; \
    python3 -c 'import ensurepip' 2>/dev/null || need="$need python3-venv"; \
    if [ -n "$need" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/kv/venv
# Wheels resolved on the host (make image); empty in a plain checkout.
COPY deploy/docker/wheelhouse/ /wheelhouse/
COPY pyproject.toml setup.py README.md /src/
COPY kv/ /src/kv/
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "kv image: Python packages from the wheelhouse (no index)"; from="--no-index --find-links /wheelhouse"; \
    else \
        echo "kv image: Python packages from PyPI"; from=""; \
    fi; \
    /opt/kv/venv/bin/pip wheel --quiet $from --wheel-dir /wheels /src; \
    /opt/kv/venv/bin/pip install --quiet --no-index --find-links /wheels kv; \
    /opt/kv/venv/bin/python -c 'import kv._speedups' \
        || { echo "kv image: the C speedups did not compile (see the pip output above)" >&2; exit 1; }; \
    /opt/kv/venv/bin/pip uninstall --quiet -y pip setuptools

# -- runtime: the venv, no compiler, a non-root user ----------------------------------------
FROM ${BASE_IMAGE}
RUN set -eu; \
    for c in gcc cc; do \
        if command -v $c >/dev/null; then echo "kv image: BASE_IMAGE holds a compiler ($c); use one without" >&2; exit 1; fi; \
    done; \
    echo 'kv:x:10001:' >> /etc/group; \
    echo 'kv:x:10001:10001:kv:/nonexistent:/usr/sbin/nologin' >> /etc/passwd; \
    mkdir -p /var/lib/kv /data; \
    chown 10001:10001 /var/lib/kv
COPY --from=build /opt/kv/venv /opt/kv/venv
COPY deploy/docker/entrypoint.sh deploy/docker/healthcheck.py /opt/kv/
# KV_TABLE_DIR: a table built from a data file goes to /tmp (a tmpfs with
# --read-only --tmpfs /tmp), not beside the data, which is mounted read-only.
# Mount a volume there to keep built tables across restarts.
ENV PATH=/opt/kv/venv/bin:$PATH \
    KV_BIND=0.0.0.0:8000 \
    KV_TABLE_DIR=/tmp/kv-tables \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# gunicorn's graceful stop: workers finish their requests and drain keep-alive
# connections (at most --keepalive, 5 s), then the master exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/kv/venv/bin/python", "-I", "-S", "/opt/kv/healthcheck.py"]
ENTRYPOINT ["/opt/kv/entrypoint.sh"]
CMD ["--help"]
