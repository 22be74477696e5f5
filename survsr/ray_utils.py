"""Start or join Ray the same way from the CLI, tests and ``ray job submit`` entrypoints."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Job submission needs no token on a local cluster, and nothing may phone home from here.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _loopback_only() -> None:
    """Keep a local start's internal ports (GCS, raylet, workers, agents) on 127.0.0.1.

    Ray 2.60 turns ``_node_ip_address="127.0.0.1"`` into the machine's reachable address, and its gRPC
    servers then listen on all interfaces, with auth disabled (measured: GCS and raylet on ``*``, dashboard
    agent on 0.0.0.0, runtime-env agent on the LAN address). ``ray._private.services`` keeps the loopback
    node IP only when multi-node clustering is off (``ray_constants.ENABLE_RAY_CLUSTER``, from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``); Ray's own processes get the node IP as an argument, so turning
    it off in this driver is enough, and nothing leaks into subprocesses through the environment. Only for
    a local start: a driver joining a cluster must report its real address."""
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):  # a Ray without it: its default applies
        log.warning("cannot keep Ray's internal ports on loopback with this Ray version")


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
             dashboard: bool = False):
    """Join ``address`` (or $RAY_ADDRESS, as set by ``ray job submit``); otherwise start an embedded local
    Ray bound to 127.0.0.1. A no-op when Ray is already up in this process."""
    import ray

    if ray.is_initialized():
        return ray
    from survsr.provenance import code_version

    # Workers inherit the driver's environment (local Ray): all outputs of a job record one code version.
    os.environ.setdefault("SURVSR_CODE_VERSION", code_version())
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        # address="local": always a new instance; with None Ray would join whatever cluster
        # /tmp/ray/ray_current_cluster names (another user's run on a shared box) and reject num_cpus.
        _loopback_only()
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                 _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", log_to_driver=True)
        log.info("started local Ray: %s", ray.cluster_resources())
    return ray
