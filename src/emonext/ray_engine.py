"""Connecting to Ray: a local engine by default, a running cluster when ``ray.address`` is set.

`emonext tune` (Ray Tune) and the Prefect ``RayTaskRunner`` (``orchestration.task_runner: ray``)
both start or join Ray from the same ``ray`` section of ``params.yaml``, through
:func:`ray_init_kwargs`, so a move from one machine to a cluster is one setting for both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from emonext.config import RayConfig

logger = logging.getLogger(__name__)


def ray_init_kwargs(config: RayConfig) -> dict[str, Any]:
    """Keyword arguments of ``ray.init`` for ``config``.

    A local engine gets ``num_cpus`` (0 = every core) and ``temp_dir``; a cluster address gets
    neither, since the cluster's own resources and folders apply. The dashboard is off and usage
    statistics are never sent (Ray reads ``RAY_USAGE_STATS_ENABLED`` from the environment, which
    its worker processes inherit).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
    if config.address is not None:
        kwargs["address"] = config.address
        return kwargs
    kwargs["num_cpus"] = config.num_cpus or os.cpu_count() or 1
    if config.temp_dir is not None:
        config.temp_dir.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(config.temp_dir)
    return kwargs


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Start or join Ray for the block; shut it down after only if this call started it.

    Raises:
        ConnectionError: ``ray.address`` names a cluster that cannot be reached.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs = ray_init_kwargs(config)
    if config.address is not None:
        check_reachable(config.address)
    try:
        ray.init(**kwargs)
    except ConnectionError as error:
        raise ConnectionError(f"ray.address={config.address!r}: cannot connect to Ray ({error})") from error
    logger.info(
        "ray: %s with %s CPU(s)",
        f"joined {config.address}" if config.address else "started a local engine",
        ray.cluster_resources().get("CPU", 0),
    )
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when a ``host:port`` or ``ray://host:port`` address does not answer.

    ``ray.init`` retries an unreachable cluster for minutes before it gives up; a plain TCP
    connection says the same in seconds. ``auto`` (the cluster this machine belongs to) is left
    to Ray.

    Raises:
        ConnectionError: Nothing accepts connections at the address.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ConnectionError(
            f"ray.address={address!r}: no Ray cluster answers there ({error}); "
            "start one with `ray start --head` or set ray.address to null for a local engine"
        ) from None
