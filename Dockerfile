# crdguard: the admission webhook image.
#
#   docker build -t crdguard/crdguard:0.1.0 .
#
# The builder stage installs crdguard into a virtual environment at /opt/crdguard with
# hack/dockerfile-install-steps.sh, the same script tests/unit/test_dockerfile.py runs. The final
# stage copies only that venv onto the same Python base, so the venv's interpreter links resolve,
# and strips pip, setuptools and ensurepip from the image.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY webhook ./webhook
COPY hack/dockerfile-install-steps.sh ./hack/
RUN sh hack/dockerfile-install-steps.sh /opt/crdguard

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="crdguard" \
      org.opencontainers.image.description="Kubernetes validating admission webhook that rejects CRD and controller version conflicts" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Nothing in the running image installs packages: drop the base image's package managers (apt,
# dpkg, pip) with setuptools, wheel and ensurepip (the venv copied below has none either).
RUN rm -rf /usr/bin/apt* /usr/bin/dpkg* /usr/lib/apt /usr/lib/dpkg /etc/apt /var/lib/apt /var/cache/apt \
      /var/lib/dpkg /usr/local/bin/pip* \
      /usr/local/lib/python3.11/ensurepip \
      /usr/local/lib/python3.11/site-packages/pip \
      /usr/local/lib/python3.11/site-packages/pip-* \
      /usr/local/lib/python3.11/site-packages/setuptools \
      /usr/local/lib/python3.11/site-packages/setuptools-* \
      /usr/local/lib/python3.11/site-packages/pkg_resources \
      /usr/local/lib/python3.11/site-packages/_distutils_hack \
      /usr/local/lib/python3.11/site-packages/distutils-precedence.pth \
      /usr/local/lib/python3.11/site-packages/wheel \
      /usr/local/lib/python3.11/site-packages/wheel-*
COPY --from=builder /opt/crdguard /opt/crdguard
ENV PATH=/opt/crdguard/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed non-root UID:GID, matching the chart's runAsUser/runAsGroup (restricted Pod Security).
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["crdguard", "serve"]
CMD ["--in-cluster", "--cert-dir", "/certs", "--host", "0.0.0.0", "--port", "8443"]
