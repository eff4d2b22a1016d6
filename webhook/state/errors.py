"""Why a live cluster could not be used: typed, so the CLI maps them to exit codes without the client.

Kept apart from watch.py so that commands which never touch a cluster do not import the client.
"""

from __future__ import annotations


class ClusterAccessError(Exception):
    """The cluster could not be used; ``str()`` names the server (or the config) and the cause."""

    def __init__(self, server: str, cause: str) -> None:
        super().__init__(f"{server}: {cause}")
        self.server = server
        self.cause = cause


class ClusterConfigError(ClusterAccessError):
    """No usable client configuration: a malformed kubeconfig, an unknown context, not in a pod."""


class ClusterUnreachable(ClusterAccessError):
    """The API server did not answer (refused, timed out, TLS failed)."""


class ClusterUnauthorised(ClusterAccessError):
    """The API server answered 401 or 403: the credentials are wrong or lack the list permission."""


class ClusterForbidden(ClusterUnauthorised):
    """403: the credentials are valid but may not list this type (others may still be readable)."""
