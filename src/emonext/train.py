"""``python -m emonext.train``: the training step, in one process or data-parallel under torchrun.

The same options as ``emonext train``; under torchrun every process runs this module and only
rank 0 logs INFO messages, shows progress and prints the JSON summary to stdout::

    python -m emonext.train --params params.yaml --set train.epochs=3
    torchrun --standalone --nproc-per-node 2 -m emonext.train --set train.batch_size=32

``train.batch_size`` is per process: the global batch is ``batch_size x nproc-per-node``.
torchrun sets ``OMP_NUM_THREADS=1`` for each process unless it is set already; with
``train.num_threads=0`` (torch's default) that is what every rank uses.
"""

from __future__ import annotations

import logging

import typer

from emonext.cli_common import (
    ParamsOption,
    ProgressOption,
    SetOption,
    VerboseOption,
    print_json,
    reports_errors,
    start,
)
from emonext.config import DEFAULT_PARAMS_FILE

app = typer.Typer(
    name="emonext.train",
    help="Train the configured model (data-parallel when launched by torchrun).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@reports_errors
def train(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Train the configured model; writes checkpoints and per-epoch metrics to train.output_dir.

    Under torchrun, train.batch_size is per process (the global batch is batch_size x processes).
    """
    from emonext.training import train as run_training
    from emonext.training.distributed import rank_from_env

    params = start(params_file, overrides, verbose)
    rank = rank_from_env()
    if rank != 0:
        # Rank 0 speaks for the run; the others report only problems.
        logging.getLogger("emonext").setLevel(logging.WARNING)
    result = run_training(params, progress=progress)
    if rank == 0:
        print_json(
            {
                **result.summary(),
                "output_dir": str(result.output_dir),
                "checkpoint": str(result.best_checkpoint),
            }
        )


def main() -> None:
    """Console entry point."""
    app(prog_name="python -m emonext.train")


if __name__ == "__main__":
    main()
