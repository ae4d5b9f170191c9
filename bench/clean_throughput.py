"""Cleaning throughput: all of the shared FER2013 (32,298 faces) through ``emonext clean``.

FER2013 is a pre-cropped source, so this measures decoding, the size and blur checks, hashing,
PNG writing and the duplicate search (the parts every image goes through), on every core.
The machine is shared, so the run is repeated and the median reported. Each run starts from an
empty output folder with the page cache flushed (untimed), and images/s counts the whole call:
worker start-up, the run and the swap of the output folder. Peak memory is
``resource.getrusage``'s max RSS of this process and of the largest worker.

    python bench/clean_throughput.py --data ../shared/data/fer2013-train-val.tar.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing.forkserver
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

from fer2013_data import SHARED_FER2013, fer2013_root
from machine import cpu_model

from emonext.cleaning import clean
from emonext.config import load_params
from emonext.fileio import write_atomically

logger = logging.getLogger("bench.clean_throughput")


def children_max_rss_mib() -> float:
    """Largest max RSS among finished child processes, workers included.

    Pool workers are children of multiprocessing's fork server, which reaps them; stopping the
    server (and waiting for it) folds their usage into this process's ``RUSAGE_CHILDREN``.
    """
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        server._stop()
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    root = fer2013_root(args.data, args.cache).resolve()
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
