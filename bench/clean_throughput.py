"""Cleaning throughput: all of the shared FER2013 (32,298 faces) through ``emonext clean``.

FER2013 is a pre-cropped source, so this measures decoding, the size and blur checks, hashing,
PNG writing and the duplicate search (the parts every image goes through), on every core.
The machine is shared, so the run is repeated and the median reported. Each run starts from an
empty output folder with the page cache flushed (untimed), and images/s counts the whole call:
worker start-up, the run and the swap of the output folder. Peak memory is
``resource.getrusage``'s max RSS of this process and of the largest worker.

    python bench/clean_throughput.py --data ../shared/data/fer2013-train-val.tar.gz

``--task-runner`` (repeatable) compares instead where the shards run: ``library`` (the library's
own process pool, as above), or the Prefect ``clean`` task with ``orchestration.task_runner``
``process``, ``thread`` or ``ray`` (a local Ray of ``--workers`` CPUs), each in a data-less flow
against a temporary Prefect API (``prefect_test_harness``, started untimed). It reports the whole
step (runner start-up included) and the clean call alone, checks that every runner wrote the same
manifest and writes ``bench/results/clean_task_runners.md``:

    python bench/clean_throughput.py --task-runner library --task-runner process \
        --task-runner thread --task-runner ray --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import multiprocessing.forkserver
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fer2013_data import SHARED_FER2013, fer2013_root
from machine import cpu_model

from emonext.cleaning import clean
from emonext.config import load_params
from emonext.fileio import write_atomically

logger = logging.getLogger("bench.clean_throughput")
REPOSITORY = Path(__file__).resolve().parents[1]
TASK_RUNNERS = ("library", "process", "thread", "ray")


def children_max_rss_mib() -> float:
    """Largest max RSS among finished child processes, workers included.

    Pool workers are children of multiprocessing's fork server, which reaps them; stopping the
    server (and waiting for it) folds their usage into this process's ``RUSAGE_CHILDREN``.
    """
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        server._stop()
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API and result store, so the benchmark leaves nothing behind."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as storage:
        settings = {PREFECT_LOCAL_STORAGE_PATH: Path(storage), PREFECT_SERVER_ANALYTICS_ENABLED: False}
        with temporary_settings(updates=settings), prefect_test_harness():
            yield


def clean_in_flow(params_file: Path, overrides: list[str]) -> dict[str, Any]:
    """Run the Prefect ``clean`` task alone in a flow; its report."""
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))  # tasks/ is a top-level package of the repository
    from prefect import flow

    from tasks import steps

    @flow(name="bench-clean")
    def bench_clean() -> dict[str, Any]:
        return steps.clean(str(params_file), overrides)

    state = bench_clean(return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"clean flow ended {state.name}: {state.message}")
    return state.result()


def compare_task_runners(args: argparse.Namespace, root: Path) -> None:
    """Time the clean step on each ``--task-runner`` and write the comparison table."""
    ray_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths: < 108 chars
    workers = args.workers or os.cpu_count() or 1
    overrides = [
        f"clean.sources=[{{name: fer2013, path: '{root}', pre_cropped: true}}]",
        f"clean.output_dir={args.output.resolve()}",
        f"clean.workers={args.workers}",
        f"ray.num_cpus={workers}",
        f"ray.temp_dir={ray_dir}",
        *args.overrides,
    ]
    rows = []
    manifests = set()
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    needs_api = any(runner != "library" for runner in args.task_runner)
    with prefect_api() if needs_api else contextlib.nullcontext():
        for runner in args.task_runner:
            runs = []
            for _ in range(max(1, args.repeat)):
                shutil.rmtree(args.output, ignore_errors=True)
                os.sync()
                started = time.perf_counter()
                if runner == "library":
                    params = load_params(args.params, overrides)
                    summary = clean(params.clean, params.data, progress=False).to_dict()
                else:
                    summary = clean_in_flow(args.params, [*overrides, f"orchestration.task_runner={runner}"])
                wall = time.perf_counter() - started
                runs.append((wall, summary))
                manifests.add(hashlib.sha256((args.output / "manifest.csv").read_bytes()).hexdigest())
            runs.sort(key=lambda run: run[0])
            wall, summary = runs[len(runs) // 2]
            throughput = summary["throughput"]
            rows.append((runner, summary, wall, throughput))
            logger.info("%s: %.1f s (clean %.1f s)", runner, wall, throughput["seconds"])
    shutil.rmtree(ray_dir, ignore_errors=True)

    inputs = rows[0][1]["inputs"]
    lines = [
        "# Cleaning throughput per task runner (FER2013, pre-cropped source)",
        "",
        f"`python bench/clean_throughput.py --workers {args.workers} --repeat {args.repeat} "
        + " ".join(f"--task-runner {runner}" for runner in args.task_runner)
        + f"` on {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; median of {args.repeat} run(s) each. "
        "*step*: the whole call, task runner start-up (process spawn, Ray start) and Prefect task "
        "runs included; *clean*: the library call once the runner is up.",
        "",
        "| runner | executor | workers | kept | step s | clean s | step images/s | clean images/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for runner, summary, wall, throughput in rows:
        lines.append(
            f"| {runner} | {throughput['executor']} | {throughput['workers']} | {summary['kept']} | "
            f"{wall:.1f} | {throughput['seconds']:.1f} | {inputs / wall:.0f} | "
            f"{throughput['images_per_second']:.0f} |"
        )
    same = "identical" if len(manifests) == 1 else f"DIFFERENT ({len(manifests)} versions)"
    lines += [
        "",
        f"{inputs} inputs; manifest.csv of every run: {same}. Load average (1 min) at the start: {load:.1f}.",
        "",
    ]
    write_atomically(args.comparison_results, "\n".join(lines))
    sys.stdout.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_FER2013)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--output", type=Path, default=Path("runs/bench/clean"), help="clean.output_dir")
    parser.add_argument("--workers", type=int, default=0, help="clean.workers (0: every core)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--results", type=Path, default=Path("bench/results/clean_throughput.md"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra params overrides")
    parser.add_argument(
        "--task-runner",
        action="append",
        choices=TASK_RUNNERS,
        help="compare where the shards run (repeatable): library, process, thread, ray",
    )
    parser.add_argument(
        "--comparison-results", type=Path, default=Path("bench/results/clean_task_runners.md")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise

    root = fer2013_root(args.data, args.cache).resolve()
    if args.task_runner:
        compare_task_runners(args, root)
        return
    params = load_params(
        args.params,
        [
            f"clean.sources=[{{name: fer2013, path: '{root}', pre_cropped: true}}]",
            f"clean.output_dir={args.output.resolve()}",
            f"clean.workers={args.workers}",
            *args.overrides,
        ],
    )
    runs = []
    for _ in range(max(1, args.repeat)):
        # Deleting 30k files of the previous run and their write-back are not the run's cost.
        shutil.rmtree(params.clean.output_dir, ignore_errors=True)
        os.sync()
        started = time.perf_counter()
        report = clean(params.clean, params.data, progress=False)
        wall = time.perf_counter() - started
        runs.append((report.inputs / wall, wall, report))
    runs.sort(key=lambda run: run[0])
    rate, wall, report = runs[len(runs) // 2]
    rates = [round(value, 1) for value, _, _ in runs]
    parent_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mib = children_max_rss_mib()
    total_mib = parent_mib + report.workers * worker_mib

    summary = {
        "inputs": report.inputs,
        "kept": report.kept,
        "dropped": {reason: count for reason, count in report.dropped.items() if count},
        "seconds": round(wall, 2),
        "images_per_second": round(rate, 1),
        "images_per_second_all_runs": rates,
        "stage_seconds": {stage: round(value, 2) for stage, value in report.timings.items()},
        "workers": report.workers,
        "peak_rss_mib": {
            "parent": round(parent_mib, 1),
            "largest_worker": round(worker_mib, 1),
            "parent_plus_workers": round(total_mib, 1),
        },
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    table = (args.output / "report.md").read_text().split("\n## Sources", 1)[0].split("\n", 2)[2]
    overrides = "".join(f" --set {item}" for item in args.overrides)
    markdown = "\n".join(
        [
            "# Cleaning throughput (FER2013, pre-cropped source)",
            "",
            f"`python bench/clean_throughput.py --workers {args.workers} --repeat {len(runs)}{overrides}` "
            f"on {summary['cpu']}, Python {summary['python']}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Median of {len(runs)} runs "
            f"(images/s of every run: {', '.join(f'{rate:.0f}' for rate in rates)}).",
            "",
            "| inputs | kept | workers | seconds | images/s | peak RSS parent | peak RSS per worker | "
            "parent + workers |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {report.inputs} | {report.kept} | {report.workers} | {wall:.1f} | "
            f"{rate:.0f} | {parent_mib:.0f} MiB | {worker_mib:.0f} MiB | "
            f"{total_mib:.0f} MiB |",
            "",
            "Stages of the median run (s): "
            + ", ".join(f"{stage} {value:.2f}" for stage, value in report.timings.items())
            + f" (whole call {wall:.1f} s). RSS counts pages the workers "
            "share with the fork server (which imports `emonext`), so the sum overstates.",
            "",
            "What each step dropped, per class:",
            "",
            table.strip(),
            "",
        ]
    )
    write_atomically(args.results, markdown)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
