"""Connecting to Ray: a local engine by default, a running cluster when ``ray.address`` is set.

`emonext tune` (Ray Tune) and the Prefect ``RayTaskRunner`` (``orchestration.task_runner: ray``)
both start or join Ray from the same ``ray`` section of ``params.yaml``, through
:func:`ray_init_kwargs`, so a move from one machine to a cluster is one setting for both.

Code Ray workers run is pickled by reference to its module when that module is importable: the
``emonext`` library is an installed package (on a cluster, every node needs it installed, with the
project's dependencies), but the repository's top-level ``tasks`` and ``flows`` packages are only
importable from the repository root, which a worker does not start in. Callers name such
packages in ``code_paths``; see :func:`ray_init_kwargs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from emonext.config import RayConfig

logger = logging.getLogger(__name__)


def ray_init_kwargs(config: RayConfig, code_paths: Sequence[Path] = ()) -> dict[str, Any]:
    """Keyword arguments of ``ray.init`` for ``config``.

    A local engine gets ``num_cpus`` (0 = every core) and ``temp_dir``; a cluster address gets
    neither, since the cluster's own resources and folders apply. The dashboard is off and usage
    statistics are never sent (Ray reads ``RAY_USAGE_STATS_ENABLED`` from the environment, which
    its worker processes inherit).

    Args:
        config: The ``ray`` section.
        code_paths: Package folders the workers must import (the repository's ``tasks`` and
            ``flows``). A local engine's workers get their parent folders on ``PYTHONPATH``
            (the same files, nothing copied); a cluster gets them as the job's ``py_modules``,
            which Ray uploads, since its nodes need not have this checkout.

    Returns:
        The keyword arguments; ``address`` only when ``ray.address`` is set.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
    folders = [Path(path).resolve() for path in code_paths]
    if config.address is not None:
        kwargs["address"] = config.address
        if folders:
            kwargs["runtime_env"] = {"py_modules": [str(folder) for folder in folders]}
        return kwargs
    kwargs["num_cpus"] = config.num_cpus or os.cpu_count() or 1
    if config.temp_dir is not None:
        config.temp_dir.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(config.temp_dir)
    if folders:
        paths = dict.fromkeys(str(folder.parent) for folder in folders)  # ordered, no repeats
        inherited = os.environ.get("PYTHONPATH")
        search_path = os.pathsep.join([*paths, *([inherited] if inherited else [])])
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": search_path}}
    return kwargs


@contextlib.contextmanager
def ray_session(config: RayConfig, code_paths: Sequence[Path] = ()) -> Iterator[None]:
    """Start or join Ray for the block; shut it down after only if this call started it.

    Args:
        config: The ``ray`` section.
        code_paths: Package folders the workers must import (see :func:`ray_init_kwargs`).

    Raises:
        ConnectionError: ``ray.address`` names a cluster that cannot be reached.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs = ray_init_kwargs(config, code_paths)
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
