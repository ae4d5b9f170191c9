"""The Prefect task runner the clean step's shards run on (``orchestration.task_runner``).

* ``process`` (the default): :class:`~prefect.task_runners.ProcessPoolTaskRunner` with
  ``clean.workers`` processes (0 = every core). Its workers are *spawned* (Prefect's choice, for
  the same behaviour on every platform), so each imports Prefect and ``emonext`` once (a few
  seconds) before its first shard; spawned children get the parent's ``sys.path``, so they import
  ``tasks`` and ``flows`` like the parent.
* ``thread``: :class:`~prefect.task_runners.ThreadPoolTaskRunner` with as many threads, in the
  process running the flow. Decoding and OpenCV release the GIL for much of their work, but not all
  of it: no start-up and no pickling, but slower than processes on large jobs (FER2013 on 2 cores:
  36 s against 22 s, ``bench/results/clean_task_runners.md``).
* ``ray``: :class:`prefect_ray.RayTaskRunner` on the engine the ``ray`` section names
  (:mod:`emonext.ray_engine`): a local Ray with ``ray.num_cpus`` and ``ray.temp_dir``, or the
  cluster at ``ray.address``. Shard workers write faces into the staging folder next to
  ``clean.output_dir``, so on a cluster of several machines that folder must be on storage every
  node mounts at the same path (and every source too: workers read the images). Ray is shut down
  when the clean step ends if the runner started (or joined) it. Starting a local Ray costs
  10-15 s on 2 cores.

A runner is started inside the running ``clean`` task (:func:`started_task_runner`), and the
shards are submitted to it directly (``runner.submit``): ``Task.submit`` would use the *flow's*
task runner instead. Prefect 3 runs such nested submissions as task runs of their own, linked to
the clean task run as their parent, on all three runners (the serialised run context travels
with each shard to the process or Ray worker that runs it), also against ``prefect_test_harness``
(``tests/flows/test_clean_shards.py``). A task run costs about 0.1-0.2 s of process or Ray
overhead, hence the larger shards of :data:`tasks.steps.SHARD_SCALE`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture, PrefectWrappedFuture
from prefect.logging import get_run_logger
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from emonext.config import Params
from emonext.ray_engine import check_reachable, ray_init_kwargs

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
#: Packages a Ray worker must import: the flow in every task run's serialised context refers to
#: functions and modules of ``flows`` and ``tasks`` by reference (cloudpickle).
WORKER_PACKAGES: tuple[Path, ...] = (REPOSITORY / "tasks", REPOSITORY / "flows")

S = TypeVar("S")
R = TypeVar("R")


def runner_workers(params: Params) -> int:
    """Processes or threads of a local pool: ``clean.workers``, 0 = every core."""
    return params.clean.workers or os.cpu_count() or 1


def build_task_runner(params: Params) -> TaskRunner[Any]:
    """The (not yet started) task runner ``orchestration.task_runner`` names.

    Args:
        params: The validated params (``orchestration``, ``clean.workers`` and ``ray``).

    Returns:
        A ``ProcessPoolTaskRunner``, ``ThreadPoolTaskRunner`` or ``RayTaskRunner``.
    """
    kind = params.orchestration.task_runner
    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=runner_workers(params))
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=runner_workers(params))
    from prefect_ray import RayTaskRunner

    init_kwargs = ray_init_kwargs(params.ray, code_paths=WORKER_PACKAGES)
    address = init_kwargs.pop("address", None)
    if address == "auto":
        # RayTaskRunner calls ray.init without an address for "auto"; given to ray.init itself,
        # "auto" joins this machine's cluster or fails instead of starting a new local engine.
        init_kwargs["address"] = address
    return RayTaskRunner(address=address, init_kwargs=init_kwargs)


@contextlib.contextmanager
def started_task_runner(params: Params) -> Iterator[tuple[TaskRunner[Any], int]]:
    """Build and start the configured task runner for the block; stop it after.

    A Ray this step started (or joined: ``ray.address``) is shut down (disconnected) at the end
    of the block; a Ray the process had already initialised is used and left running.

    Args:
        params: The validated params.

    Yields:
        The started runner and how many tasks it runs at once (pool size, or the Ray
        cluster's CPUs).

    Raises:
        ConnectionError: ``ray.address`` names a cluster that cannot be reached (checked in
            seconds, before ``ray.init`` would retry for minutes).
    """
    if params.orchestration.task_runner != "ray":
        with build_task_runner(params) as runner:
            yield runner, runner_workers(params)
        return
    import ray
    from prefect_ray.context import remote_options

    if params.ray.address is not None:
        check_reachable(params.ray.address)
    options: dict[str, Any] = {}
    if ray.is_initialized():
        # Started before this step, without the runtime_env that lets workers import tasks/ and
        # flows/: the shards bring it themselves.
        options["runtime_env"] = ray_init_kwargs(params.ray, code_paths=WORKER_PACKAGES)["runtime_env"]
    with build_task_runner(params) as runner, remote_options(**options):
        yield runner, max(1, int(ray.cluster_resources().get("CPU", 1)))


def task_mapper(
    runner: TaskRunner[Any], task: Task[..., R]
) -> Callable[[Callable[[S], R], Sequence[S]], Iterator[R]]:
    """A ``map`` that runs each item as a run of ``task`` on ``runner``, results in order.

    ``task`` is called as ``task(function, shard)`` (see :func:`tasks.steps.clean_shard`). All
    shards are submitted at once; the runner decides how many run at a time.

    Args:
        runner: A started task runner.
        task: The task wrapping one call of the mapped function.

    Returns:
        ``map_shards(function, shards)``, yielding each shard's result in shard order and raising
        the first failed shard's error. Before it raises, shards not yet started are cancelled
        and running ones are waited for: the library deletes the staging folder they write into.
    """

    def map_shards(function: Callable[[S], R], shards: Sequence[S]) -> Iterator[R]:
        futures = [runner.submit(task, {"function": function, "shard": shard}) for shard in shards]
        finished = False
        try:
            for future in futures:
                yield future.result()
            finished = True
        finally:
            if not finished:
                _cancel_and_wait(futures)

    return map_shards


def _cancel_and_wait(futures: Sequence[PrefectFuture[Any]]) -> None:
    pending = [future for future in futures if not _settled(future)]
    _run_logger().info("clean: a shard failed; stopping the %d other unfinished shard(s)", len(pending))
    for future in pending:
        wrapped = _wrapped(future)
        if isinstance(wrapped, concurrent.futures.Future):
            wrapped.cancel()  # stops only a shard that has not started
        elif _is_ray_future(future):
            import ray

            # Not started: never starts. Running: interrupted (a KeyboardInterrupt, Ray's way).
            ray.cancel(wrapped)
    for future in pending:
        wrapped = _wrapped(future)
        if isinstance(wrapped, concurrent.futures.Future):
            # future.wait() would raise CancelledError for a cancelled shard; this does not.
            concurrent.futures.wait([wrapped])
        else:
            future.wait()  # Ray: a failed or cancelled shard ends as a state, nothing raised


def _wrapped(future: PrefectFuture[Any]) -> Any:
    return future.wrapped_future if isinstance(future, PrefectWrappedFuture) else None


def _settled(future: PrefectFuture[Any]) -> bool:
    wrapped = _wrapped(future)
    return isinstance(wrapped, concurrent.futures.Future) and wrapped.done()


def _is_ray_future(future: PrefectFuture[Any]) -> bool:
    # Only a RayTaskRunner makes these, and it has imported prefect_ray by then.
    module = sys.modules.get("prefect_ray.task_runners")
    return module is not None and isinstance(future, module.PrefectRayFuture)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # the mapper used outside a task run
        return logger
