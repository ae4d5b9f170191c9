"""Epoch wall time of one training process vs. data-parallel processes under torchrun (gloo, CPU).

Trains ``--epochs`` epochs of the default model (``params.yaml``) on a FER2013 subset
(``--max-per-class`` faces per class and split) through ``python -m emonext.train``, as it
would be run by hand: once as one process with torch's default threads, once per ``--nprocs``
entry > 1 under ``torchrun --standalone --nproc-per-node N`` with one thread per process
(torchrun sets ``OMP_NUM_THREADS=1``; any ``OMP_NUM_THREADS`` of the caller is removed for both).

By default every run keeps the global batch of ``train.batch_size`` (N processes train on
``batch_size / N`` each), so all runs take the same optimisation steps with the same
hyperparameters; ``--scale-batch`` gives every process the full ``batch_size`` instead.
Seconds per epoch and images/s come from each run's ``metrics.json`` (rank 0's clock; an epoch
includes rank 0's validation pass unless ``--no-val``); the wall time also counts start-up and
data loading. The machine may be shared, so ``--repeat`` runs every configuration several times,
interleaved, and reports the run with the median seconds per epoch.

    python bench/ddp_epochs.py --max-per-class 1000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from fer2013_data import SHARED_FER2013, fer2013_root
from machine import cpu_model

from emonext.config import load_params
from emonext.fileio import write_atomically
from emonext.runtime import resolve_precision

logger = logging.getLogger("bench.ddp_epochs")

#: Variables that would make a child think it is part of another distributed job, or pin its threads.
_INHERITED = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class RunResult:
    """One training command and what it measured."""

    processes: int
    batch_per_process: int
    command: list[str]
    epoch_seconds: list[float]
    images_per_second: list[float]
    wall_seconds: float

    @property
    def mean_epoch_seconds(self) -> float:
        return statistics.mean(self.epoch_seconds)

    @property
    def mean_images_per_second(self) -> float:
        return statistics.mean(self.images_per_second)


def training_command(processes: int, params_file: Path, overrides: list[str]) -> list[str]:
    """``python -m emonext.train`` for one process, wrapped in torchrun for several.

    Args:
        processes: Number of training processes.
        params_file: The params file.
        overrides: ``--set`` values.

    Returns:
        The command line.
    """
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, "-m", "emonext.train", "--params", str(params_file), "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    return command


def run_training(
    processes: int, batch: int, params_file: Path, overrides: list[str], work: Path
) -> RunResult:
    """Train once in a fresh output folder and read its per-epoch metrics.

    Args:
        processes: Number of training processes.
        batch: ``train.batch_size`` of each process.
        params_file: The params file.
        overrides: ``--set`` values shared by every run.
        work: Parent of this run's output folder and log.

    Returns:
        The command and its timings.

    Raises:
        RuntimeError: The training command failed (its log is named).
    """
    output_dir = work / f"{processes}proc"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    command = training_command(
        processes, params_file, [*overrides, f"train.batch_size={batch}", f"train.output_dir={output_dir}"]
    )
    env = {key: value for key, value in os.environ.items() if key not in _INHERITED}
    log_file = work / f"{processes}proc.log"
    logger.info("%d process(es), batch %d each: %s", processes, batch, shlex.join(command))
    start = time.perf_counter()
    with log_file.open("w") as log:
        completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed (exit {completed.returncode}); see {log_file}")
    rows = json.loads((output_dir / "metrics.json").read_text())
    result = RunResult(
        processes=processes,
        batch_per_process=batch,
        command=command,
        epoch_seconds=[row["seconds"] for row in rows],
        images_per_second=[row["images_per_second"] for row in rows],
        wall_seconds=wall,
    )
    logger.info(
        "%d process(es): %.1f s/epoch, %.1f images/s, %.1f s wall",
        processes,
        result.mean_epoch_seconds,
        result.mean_images_per_second,
        wall,
    )
    return result


def median_run(results: list[RunResult]) -> RunResult:
    """The run with the median seconds per epoch (the lower middle one of an even count)."""
    ranked = sorted(results, key=lambda result: result.mean_epoch_seconds)
    return ranked[(len(ranked) - 1) // 2]


def markdown(
    results: list[RunResult], args: argparse.Namespace, faces: str, precision: str, load: tuple[str, str]
) -> str:
    """The results file: setup, one row per run, and the exact commands."""
    baseline = results[0].mean_epoch_seconds
    argv = shlex.join(["python", "bench/ddp_epochs.py", *sys.argv[1:]])
    lines = [
        "# Training epochs: one process vs. data-parallel processes (torchrun, gloo, CPU)",
        "",
        f"`{argv}` on {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"Load average before/after: {load[0]} / {load[1]}.",
        "",
        f"Data: {faces}. Default model of `{args.params}` (precision {precision}), "
        f"{args.epochs} epoch(s) per run, median of {args.repeat} interleaved run(s), "
        + ("no validation" if args.no_val else "each epoch includes rank 0's validation pass")
        + ". One process uses torch's default threads; under torchrun each process has 1 thread. "
        "s/epoch and images/s are means over the epochs of rank 0's `metrics.json` (images/s counts "
        "every rank's images); wall counts the whole command (start-up and data loading included).",
        "",
        "| processes | batch per process | global batch | s/epoch | s of each epoch | images/s "
        "| speed-up | wall s |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.processes} | {result.batch_per_process} "
            f"| {result.batch_per_process * result.processes} | {result.mean_epoch_seconds:.1f} "
            f"| {', '.join(f'{seconds:.1f}' for seconds in result.epoch_seconds)} "
            f"| {result.mean_images_per_second:.1f} | {baseline / result.mean_epoch_seconds:.2f}x "
            f"| {result.wall_seconds:.1f} |"
        )
    lines += ["", "Commands:", ""]
    lines += [f"    {shlex.join(result.command)}" for result in results]
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_FER2013)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--max-per-class", type=int, default=None, help="data.max_per_class (default: all of FER2013)"
    )
    parser.add_argument(
        "--nprocs",
        type=int,
        nargs="+",
        default=[1, 2],
        help="process counts; speed-up is relative to the fewest",
    )
    parser.add_argument(
        "--scale-batch", action="store_true", help="every process trains on the full train.batch_size"
    )
    parser.add_argument("--no-val", action="store_true", help="skip validation (data.val_fraction=0)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration; the median is reported"
    )
    parser.add_argument("--work", type=Path, default=Path("runs/bench/ddp_epochs"), help="output folders")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ddp_epochs.md"))
    parser.add_argument("--note", default="", help="a line added to the results (e.g. the machine's load)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra params overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    root = fer2013_root(args.data, args.cache).resolve()
    overrides = [f"data.root={root}", f"train.epochs={args.epochs}", *args.overrides]
    if args.max_per_class is not None:
        overrides.append(f"data.max_per_class={args.max_per_class}")
    if args.no_val:
        overrides.append("data.val_fraction=0")
    params = load_params(args.params, overrides)
    batch_size = params.train.batch_size
    precision = resolve_precision(params.train.precision, torch.device("cpu"))
    faces = f"FER2013 image folders at `{root}`, " + (
        f"at most {args.max_per_class} faces per class and split"
        if args.max_per_class is not None
        else "all faces"
    )

    args.work.mkdir(parents=True, exist_ok=True)
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    runs: dict[int, list[RunResult]] = {processes: [] for processes in sorted(set(args.nprocs))}
    for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits every configuration
        for processes, done in runs.items():
            batch = batch_size if args.scale_batch else max(1, batch_size // processes)
            done.append(run_training(processes, batch, args.params.resolve(), overrides, args.work))
    results = [median_run(done) for done in runs.values()]
    load_after = " ".join(f"{value:.2f}" for value in os.getloadavg())
    write_atomically(args.out, markdown(results, args, faces, precision, (load_before, load_after)))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
