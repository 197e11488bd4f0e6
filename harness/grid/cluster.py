"""Talking to a Ray cluster: its address, its token, one-line errors (the only module that touches Ray's private
APIs), and ``connect_ray`` for the Ray executor."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from harness.errors import ClusterError

TOKEN_HELP = ("copy the cluster's token (`ray get-auth-token` on the head node prints it) to ~/.ray/auth_token on "
              "this machine, or point RAY_AUTH_TOKEN_PATH at it, or set RAY_AUTH_TOKEN; and export RAY_AUTH_MODE=token")


def ray_token_available() -> bool:
    """A Ray token where Ray documents it: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path) if path else Path.home() / ".ray" / "auth_token"
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def _enable_ray_token_auth() -> None:
    """RAY_AUTH_MODE=token when it is unset and a token is available (as ``ray start`` does when it
    finds one), so a driver reaches a token-authenticated cluster without further settings."""
    if os.environ.get("RAY_AUTH_MODE") is not None or not ray_token_available():
        return
    try:  # Ray's own switch (also refreshes its cached config)
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()
    except ImportError:
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the block (native code's log lines included)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_cluster(address: str, timeout: float = 5.0) -> str:
    """The cluster's GCS address, once it answers and accepts this driver's token; else ClusterError."""
    import socket

    from ray._private import services

    _enable_ray_token_auth()
    try:
        gcs = services.canonicalize_bootstrap_address(address)
    except Exception as e:  # "auto" with no cluster started here, a malformed address
        raise ClusterError(f"no Ray cluster at --ray-address {address} ({str(e).splitlines()[0] if str(e) else e!r}); "
                           f"start one with `ray start --head`, or pass its head's host:port") from None
    if gcs is None:
        raise ClusterError(f"no Ray cluster found for --ray-address {address}: start one with `ray start --head` "
                           f"on this machine, or pass its head's host:port")
    host, port = gcs.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at {gcs} ({e.strerror or e}): start it with "
                           f"`ray start --head --port {port}`, or fix --ray-address") from None
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        with _quiet_stderr():  # Ray's C++ client logs each refused attempt itself
            GcsClient(address=gcs)
    except AuthenticationError:
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        what = ("refuses this driver's token" if mode == "token" and ray_token_available()
                else f"requires token authentication (RAY_AUTH_MODE here: {mode})" if mode != "token"
                else "requires token authentication and this driver has no token")
        raise ClusterError(f"the Ray cluster at {gcs} {what}: {TOKEN_HELP}") from None
    except Exception as e:
        raise ClusterError(f"the Ray cluster at {gcs} does not answer ({str(e).splitlines()[0][:200]}); "
                           f"check it with `ray status --address {gcs}`") from None
    return gcs


def connect_ray(address: str | None) -> None:
    """``ray.init``: a local Ray (address None), or an existing cluster, checked first (one-line errors)."""
    import ray

    if address is not None and not address.startswith("ray://"):
        address = check_cluster(address)
    # "local": a new Ray of this driver's own, never a cluster someone else started on this machine
    # (ray.init() with no address joins the latest one it finds); RAY_ADDRESS still overrides it.
    ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
