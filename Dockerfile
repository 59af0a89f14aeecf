# syntax=docker/dockerfile:1
# mnist-ddp as a container image: the self-contained bundle from `npm run bundle` on Debian 12 slim. The bundle carries
# its own Node.js, the ZeroMQ addon, the WebAssembly kernels and gzip'd MNIST, so the base needs only glibc 2.28+,
# libstdc++ and libgcc_s, which debian:12-slim has. No Node.js image, no npm, no network at run time.
#
#   npm run bundle
#   docker build -t mnist-ddp:0.1.0 .
#   docker run --rm mnist-ddp:0.1.0 --help
#
# deploy/k8s/ runs it on Kubernetes; deploy/README.md says what was and was not checked.

# Keep the default equal to package.json's version (test/unit/k8s-manifests.test.ts checks it); a bundle of another
# version: --build-arg VERSION=x.y.z.
ARG VERSION=0.1.0

FROM debian:12-slim
ARG VERSION

# tini as PID 1. The kernel drops signals a PID 1 has no handler for, and the coordinator installs none for SIGTERM,
# so without an init `docker stop` and pod deletion would wait out the grace period and SIGKILL it. tini forwards
# SIGTERM (workers then leave the ring cleanly) and reaps the worker processes `train --workers N` starts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid, so that Kubernetes' runAsUser/fsGroup (deploy/k8s) and host bind mounts can name it.
# --no-log-init: no sparse lastlog/faillog entry sized by the uid.
RUN groupadd --gid 10001 mnistddp \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/mnist-ddp --no-create-home --shell /usr/sbin/nologin mnistddp \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/mnist-ddp

# Owned by root and read-only to the process: the application cannot be changed by what it runs.
COPY --chown=0:0 bundle/mnist-ddp-${VERSION}-linux-x64/ /opt/mnist-ddp/

USER 10001:10001
WORKDIR /var/lib/mnist-ddp

# Coordinator: 5555 control socket (--bind), 9400 /metrics (--coordinator-metrics-port).
# Worker: 9401 /metrics (--metrics-port; its ring inbox takes a port from --ring-ports, or any port without it).
EXPOSE 5555 9400 9401

ENTRYPOINT ["/usr/bin/tini", "--", "/opt/mnist-ddp/mnist-ddp"]
CMD ["--help"]
