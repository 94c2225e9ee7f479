# The nginx front for sharded kv servers (deploy/compose.yaml): stock nginx with
# a main config that includes the front `kv deploy nginx` renders, mounted at
# /etc/nginx/kv/kv.conf. Runs as www-data (uid 33 in every Debian image), logs
# to stdout/stderr, writes only /tmp (works with a read-only root).
#
#   docker build -t kv-nginx:dev -f deploy/docker/nginx.Dockerfile .
#
# NGINX_BASE_IMAGE: the official nginx image, or any Debian-based image (Debian's
# nginx-light is installed when it has no nginx; make image passes its own
# Debian base with nginx-light already in it when no image can be pulled).
ARG NGINX_BASE_IMAGE=nginx:stable-bookworm
FROM ${NGINX_BASE_IMAGE}
RUN set -eu; \
    if ! [ -x /usr/sbin/nginx ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    mkdir -p /etc/nginx/kv
COPY deploy/docker/nginx.conf /etc/kv-nginx/nginx.conf
USER 33:33
EXPOSE 8080
# SIGQUIT: nginx's graceful shutdown (requests in progress are finished).
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/kv-nginx/nginx.conf", "-g", "daemon off;"]
