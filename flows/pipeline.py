"""The whole pipeline as one Prefect flow, and its command line.

```bash
python -m flows.pipeline run [--params params.yaml] [--set section.key=value ...]
python -m flows.pipeline serve [--params params.yaml] [--set ...] [--interval SECONDS]
```

``run`` runs the ``pipeline`` flow once, here and now, and prints what it registered. ``serve``
creates the ``orchestration.deployment`` deployment on the Prefect server that ``PREFECT_API_URL``
names, scheduled by ``orchestration.cron`` in ``orchestration.timezone`` (or every ``--interval``
seconds, for trying it out), and runs its flow runs until interrupted.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import flow
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron, Interval
from prefect.settings import PREFECT_API_URL
from rich.console import Console
from rich.table import Table

from emonext.config import ConfigError, load_params
from flows.compose import Outcomes
from flows.data_pipeline import DATA_STEPS, data_pipeline
from flows.training_pipeline import TRAINING_STEPS, training_pipeline

#: The steps in the order the flow runs them (``dvc.yaml`` has one stage per step, in this order).
PIPELINE_STEPS: tuple[str, ...] = tuple(step.name for step in (*DATA_STEPS, *TRAINING_STEPS))

#: The repository root: served flow runs import ``flows`` and ``tasks`` from it.
REPO_ROOT = Path(__file__).resolve().parents[1]


@flow(name="pipeline")
def pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> Outcomes:
    """scrape -> clean -> split -> train -> evaluate -> register, as two sub-flows.

    A step whose params, code, inputs and outputs did not change since its last run is served
    from the cache (its task run is ``Cached``); a failing step fails the run with its error and
    leaves the outputs of the steps before it as they are.

    Args:
        params_file: The params file (relative paths inside resolve against its folder).
        overrides: ``section.key=value`` overrides, as ``emonext --set`` takes them.

    Returns:
        Per step, its final state's name and its summary.
    """
    return {**data_pipeline(params_file, overrides), **training_pipeline(params_file, overrides)}


# ------------------------------------------------------------------------------------------------
# Command line

app = typer.Typer(
    name="python -m flows.pipeline",
    help="Run or serve the emonext Prefect pipeline (scrape, clean, split, train, evaluate, register).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="params file (the one source of configuration)")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a params key, e.g. --set train.epochs=3 (repeatable)"),
]


def checked_params(params_file: Path, overrides: list[str] | None) -> tuple[str, list[str]]:
    """Validate the params before Prefect starts anything; return them as flow parameters.

    The path is made absolute, so a served deployment's runs find it whatever their folder.
    """
    path = params_file.expanduser().resolve()
    overrides = list(overrides or [])
    try:
        load_params(path, overrides)
    except ConfigError as error:
        stderr.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        raise typer.Exit(2) from None
    return str(path), overrides


def summary_table(outcomes: Outcomes, seconds: float) -> Table:
    """What a pipeline run did: each step's state, the registered model and its test scores."""
    registration: dict[str, Any] = outcomes["register"]["result"]
    report: dict[str, Any] = outcomes["evaluate"]["result"]["report"]
    split = outcomes["evaluate"]["result"]["split"]
    table = Table(title="emonext pipeline", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", ", ".join(f"{step} {outcome['state']}" for step, outcome in outcomes.items()))
    table.add_row("registered model", f"{registration['model_name']} version {registration['version']}")
    table.add_row("aliases", ", ".join(registration["aliases"]) or "none")
    table.add_row("decision", registration["reason"])
    table.add_row(f"{split} accuracy", f"{report['accuracy']:.4f} ({report['num_samples']} faces)")
    table.add_row(f"{split} macro-F1", f"{report['macro_f1']:.4f}")
    table.add_row(
        "MLflow run",
        registration.get("run_url") or f"{registration['run_id']} in {registration['tracking_uri']}",
    )
    table.add_row("wall time", f"{seconds:.1f} s")
    return table


@app.command()
def run(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Run the pipeline once and print the registered model, its aliases and test accuracy."""
    path, overrides = checked_params(params_file, overrides)
    started = time.perf_counter()
    state = pipeline(params_file=path, overrides=overrides, return_state=True)
    seconds = time.perf_counter() - started
    if state.type != StateType.COMPLETED:
        stderr.print(
            f"[bold red]pipeline {state.type.value.lower()}:[/bold red] {state.message}", highlight=False
        )
        raise typer.Exit(1)
    stdout.print(summary_table(state.result(), seconds))


@app.command()
def serve(
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
    interval: Annotated[
        float | None,
        typer.Option(min=1, help="run every SECONDS instead of orchestration.cron (to try the schedule)"),
    ] = None,
) -> None:
    """Serve the pipeline deployment on its schedule until interrupted (needs PREFECT_API_URL)."""
    path, overrides = checked_params(params_file, overrides)
    if not PREFECT_API_URL.value():
        # Without a server, Prefect would start a temporary one inside this process: its
        # schedule, runs and history would vanish with it.
        stderr.print(
            "[bold red]error:[/bold red] serve needs a Prefect server: run `prefect server start` and "
            "set PREFECT_API_URL=http://127.0.0.1:4200/api",
            highlight=False,
        )
        raise typer.Exit(2)
    settings = load_params(path, overrides).orchestration
    schedule = (
        Interval(timedelta(seconds=interval)) if interval else Cron(settings.cron, timezone=settings.timezone)
    )
    # Flow runs execute in child processes that import the flow by module path; make sure they
    # find the repository's packages whatever their working folder.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    # This module may be running as __main__: serve the flow object of the importable module, so
    # the deployment's entrypoint is flows.pipeline.pipeline, not __main__.pipeline.
    from flows.pipeline import pipeline as importable_pipeline

    importable_pipeline.serve(
        name=settings.deployment,
        schedule=schedule,
        parameters={"params_file": path, "overrides": overrides},
        description="emonext: scrape, clean, split, train, evaluate, register",
        tags=["emonext"],
        # Two runs at once would write the same folders: one at a time, the next one waits.
        limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m flows.pipeline``."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m flows.pipeline")


if __name__ == "__main__":
    main()
