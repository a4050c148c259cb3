"""Starting and inspecting Ray for the Ray evaluator (``evo_snn.evaluation.ray_evaluator``).

A local Ray (no ``address``) is started by ``init_local_ray``: a new instance of its
own (``address='local'``, never one that happens to run on the machine) whose
processes listen on 127.0.0.1 only (``_loopback_node_ip``), with Ray's token
authentication on (``ray_auth_mode``). ``gpu_share`` is the GPU share of each actor on
a cluster, from ``ray.cluster_resources()``.

Ray is imported inside the functions only.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_node_ip():
    """Within the block, Ray keeps ``_node_ip_address='127.0.0.1'`` as the node IP.

    Ray 2.60's ``ray.init`` passes the given node IP through
    ``services.resolve_ip_for_localhost``, which replaces 127.0.0.1 by the machine's
    routable address (``get_node_ip_address``) unless ``ray_constants.ENABLE_RAY_CLUSTER``
    is false; that constant is read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ray is
    imported (true on Linux). With the machine's address as node IP, gcs_server, raylet
    and every worker bind their gRPC servers to all interfaces ('::'); with 127.0.0.1
    they bind to 127.0.0.1 only (measured: tests/test_ray_network.py). The constant is
    set for the block (ray may be imported already) and the variable for the processes
    that ``ray.init`` starts; both are restored after it.
    """
    from ray._private import ray_constants

    had_const = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    before_const = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    before_env = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had_const:
            ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def init_local_ray(num_cpus: int, **kwargs) -> None:
    """Start a new local Ray instance for this process (``ray.init(address='local')``, so
    never one that some other job started on this machine), without a dashboard, whose
    processes listen on 127.0.0.1 only (``_loopback_node_ip``). Ray enables its token
    authentication by default for a new local instance (``ray_auth_mode()``).

    num_cpus: CPUs declared to Ray; kwargs: more ``ray.init`` arguments (e.g. ``num_gpus``).
    """
    import ray

    opts = dict(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                _node_ip_address="127.0.0.1")
    opts.update(kwargs)
    with _loopback_node_ip():
        ray.init(**opts)


def ray_auth_mode() -> str:
    """Ray's authentication mode in this process after ``ray.init``: 'token' (every RPC
    carries the cluster's token, Ray's default for a new local instance), 'disabled',
    or 'unknown' (a Ray without ``get_authentication_mode``)."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:
        return "unknown"
    mode = get_authentication_mode()
    return "token" if mode == AuthenticationMode.TOKEN else str(getattr(mode, "name", mode)).lower()


def gpu_share(cluster_gpus: float, workers: int) -> float:
    """The GPU share of each of ``workers`` actors on a cluster with ``cluster_gpus`` GPUs
    (``ray.cluster_resources()['GPU']``, over all nodes, so a CPU-only head with GPU
    workers counts its workers' GPUs): 1.0 when every actor can have a GPU of its own,
    else 1/k with k = ceil(workers / GPUs) actors per GPU (a share that packs whole into
    a GPU, so no actor waits for a GPU that has too little left); 0.0 without GPUs."""
    gpus = int(cluster_gpus)
    if gpus < 1 or workers < 1:
        return 0.0
    return 1.0 / math.ceil(workers / gpus)
