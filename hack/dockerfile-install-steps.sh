#!/bin/sh
# Installs crdguard into a fresh virtual environment at PREFIX, the way the image does:
# the Dockerfile's builder stage runs this script, and tests/unit/test_dockerfile.py runs the
# same script into a temporary directory, so the test exercises the image's real install steps.
#
# Usage: sh hack/dockerfile-install-steps.sh PREFIX
#   PYTHON   interpreter that creates the venv (default: python3)
#
# Steps: build crdguard's wheel from the source tree this script sits in; install it with its
# dependencies pinned by requirements.lock (used as constraints, so dev tools stay out); then
# remove pip and setuptools from the venv, which the running webhook never needs.
set -eu

prefix=${1:?usage: dockerfile-install-steps.sh PREFIX}
python=${PYTHON:-python3}
src=$(cd "$(dirname "$0")/.." && pwd)
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m venv "$prefix"
venv_python="$prefix/bin/python"
"$venv_python" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$wheels" "$src"
"$venv_python" -m pip install --quiet --disable-pip-version-check \
  --constraint "$src/requirements.lock" "$wheels"/crdguard-*.whl
"$venv_python" -m pip uninstall --quiet --disable-pip-version-check --yes pip setuptools
# pip cannot remove its own launcher scripts once it is gone; they would dangle.
rm -f "$prefix"/bin/pip "$prefix"/bin/pip3 "$prefix"/bin/pip3.*
"$prefix/bin/crdguard" --version
