"""The tuning flow: scrape -> clean -> split -> tune, and its command line.

```bash
python -m flows.tuning run [--params params.yaml] [--set section.key=value ...] [--address ray://head:10001]
```

The data steps are the data flow's (cached the same way); the tune step runs a Ray Tune search
(:mod:`tasks.tuning`, never cached) and writes ``best_params.yaml``, ``best.json`` and
``trials.csv`` to ``tune.output_dir``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import flow
from prefect.client.schemas.objects import StateType
from rich.console import Console
from rich.table import Table

from flows.compose import Outcomes, run_steps
from flows.data_pipeline import DATA_STEPS
from flows.pipeline import ParamsOption, SetOption, checked_params
from tasks import reports
from tasks import tuning as tuning_tasks

#: The flow's steps, in the order it runs them.
TUNING_STEPS = (*DATA_STEPS, tuning_tasks.tune)


@flow(name="tuning")
def tuning(params_file: str = "params.yaml", overrides: list[str] | None = None) -> Outcomes:
    """Scrape (when enabled), clean and split the data, then search hyper-parameters on it.

    Args:
        params_file: The params file (relative paths inside resolve against its folder).
        overrides: ``section.key=value`` overrides, as ``emonext --set`` takes them.

    Returns:
        Per step, its final state's name and its summary (the tune step's: the best values,
        metric, trials and output files).
    """
    outcomes = run_steps(DATA_STEPS, params_file, overrides)
    # Published before the search, which takes long and may fail: the data report stands either way.
    reports.publish_data_report(outcomes)
    outcomes.update(run_steps((tuning_tasks.tune,), params_file, overrides))
    return outcomes


# ------------------------------------------------------------------------------------------------
# Command line

app = typer.Typer(
    name="python -m flows.tuning",
    help="Run the emonext tuning flow (scrape, clean, split, then a Ray Tune search).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)


def summary_table(outcomes: Outcomes, seconds: float) -> Table:
    """What a tuning run found: step states, the best values and metric, where everything is."""
    result: dict[str, Any] = outcomes["tune"]["result"]
    table = Table(title="emonext tuning", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", ", ".join(f"{step} {outcome['state']}" for step, outcome in outcomes.items()))
    table.add_row(f"best {result['metric']}", f"{result['best_value']:.4f} (trial {result['best_trial']})")
    for key, value in result["best_values"].items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    stopped, failed = len(result["stopped_early"]), len(result["failed"])
    table.add_row("trials", f"{result['num_trials']}: {stopped} stopped early, {failed} failed")
    table.add_row("best params", result["files"]["best_params"])
    table.add_row("MLflow run", f"{result['mlflow_run_id']} in {result['tracking_uri']}")
    table.add_row("wall time", f"{seconds:.1f} s")
    return table


@app.callback()
def _commands() -> None:
    """Run the emonext tuning flow (scrape, clean, split, then a Ray Tune search)."""
    # A group callback keeps `run` a subcommand: a one-command Typer app would take its options
    # directly, unlike `python -m flows.pipeline run`.


@app.command()
def run(
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
    address: Annotated[
        str | None, typer.Option("--address", help="join this Ray cluster instead of ray.address")
    ] = None,
) -> None:
    """Run the tuning flow once and print the best configuration it found."""
    extra = [f"ray.address={json.dumps(address)}"] if address else []
    path, overrides = checked_params(params_file, [*(overrides or []), *extra])
    started = time.perf_counter()
    state = tuning(params_file=path, overrides=overrides, return_state=True)
    seconds = time.perf_counter() - started
    if state.type != StateType.COMPLETED:
        stderr.print(
            f"[bold red]tuning {state.type.value.lower()}:[/bold red] {state.message}", highlight=False
        )
        raise typer.Exit(1)
    stdout.print(summary_table(state.result(), seconds))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m flows.tuning``."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m flows.tuning")


if __name__ == "__main__":
    main()
