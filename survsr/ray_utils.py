"""Start or join Ray the same way from the CLI, tests and ``ray job submit`` entrypoints.

Where Ray runs is configured once per job: the pipeline's (and the demo's) ``ray:`` section, or ``--address``
on a single command. Stage configs hold only their own parallelism (``pool:``, ``scaling:``), never a
cluster address, so nothing a stage says about the connection can be silently ignored inside a pipeline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

# Job submission needs no token on a local cluster, and nothing may phone home from here.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@dataclass
class RayConfig:
    """The job's Ray connection (the one ``ray:`` section of a pipeline config)."""

    address: str = ""  # "" = $RAY_ADDRESS (`ray job submit` sets it), else an embedded local Ray on 127.0.0.1
    num_cpus: Optional[int] = None  # embedded Ray only; null = every core
    num_gpus: Optional[int] = None  # embedded Ray only; null = what Ray detects


def use_address(address: str | None) -> None:
    """``--address`` of a single command: the same convention as ``ray job submit`` ($RAY_ADDRESS), so a
    stage that starts Ray later joins that cluster."""
    if address:
        os.environ["RAY_ADDRESS"] = address


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


def init_ray(cfg: RayConfig | None = None, *, dashboard: bool = False):
    """Join ``cfg.address`` (or $RAY_ADDRESS); otherwise start an embedded local Ray bound to 127.0.0.1.
    A no-op when Ray is already up in this process."""
    import ray

    if ray.is_initialized():
        return ray
    from survsr.provenance import code_version

    from survsr import console

    cfg = cfg or RayConfig()
    to_driver = not console.quiet()
    # Workers inherit the driver's environment (local Ray): all outputs of a job record one code version.
    os.environ.setdefault("SURVSR_CODE_VERSION", code_version())
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=to_driver)
    else:
        # address="local": always a new instance; with None Ray would join whatever cluster
        # /tmp/ray/ray_current_cluster names (another user's run on a shared box) and reject num_cpus.
        _loopback_only()
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=dashboard,
                 _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", log_to_driver=to_driver)
        log.info("started local Ray: %s", ray.cluster_resources())
    if not to_driver:
        from ray._private.worker import _global_node  # no public API names the session's log folder

        log.info("Ray worker logs: %s", _global_node.get_logs_dir_path() if _global_node else "(not local)")
    return ray
