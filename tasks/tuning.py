"""The tune step as a Prefect task: a Ray Tune search, with its trials and best values as artifacts.

The task takes the params file and its overrides, like every step in :mod:`tasks.steps`, and runs
:func:`emonext.tuning.run_tune`. It is never cached (``NO_CACHE``): a search is an experiment,
not a function of its inputs. ASHA stops trials by comparing results in the order concurrent
trials report them, so the same params and data can stop other trials and find another best;
and every search is recorded as a new MLflow parent run with its trials, which a cache hit
would silently leave out. Asking for a search again means running one.

Since the body always runs, the artifacts are made here, not by a separate never-cached task as
the cacheable steps' are (:mod:`tasks.reports`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from emonext.config import load_params
from tasks import attach_library_logs
from tasks.reports import format_number, markdown_table

attach_library_logs()

TUNE_TRIALS_KEY = "emonext-tune-trials"
TUNE_SUMMARY_KEY = "emonext-tune-best"


def trial_rows(outcome: Mapping[str, Any]) -> list[dict[str, str]]:
    """The trials as table rows, numbers formatted (a failed trial's metrics read ``none``)."""
    return [
        {key: format_number(value, 6) if key != "error" else str(value) for key, value in row.items()}
        for row in outcome["trials"]
    ]


def tuning_markdown(outcome: Mapping[str, Any]) -> str:
    """The search's summary: best metric, values and how to train with them, counts, MLflow run."""
    metric, files = outcome["metric"], outcome["files"]
    overrides = outcome["overrides"]
    lines = [
        f"# Best {metric}: {format_number(outcome['best_value'])}",
        "",
        f"Trial `{outcome['best_trial']}` at epoch {outcome['best_epoch']}, of {outcome['num_trials']} "
        f"trial(s): {len(outcome['stopped_early'])} stopped early by ASHA, {len(outcome['failed'])} failed; "
        f"{format_number(outcome['wall_seconds'], 0)} s.",
        "",
        *markdown_table(
            ["params key", "best value"], [[key, value] for key, value in outcome["best_values"].items()]
        ),
        "",
        "## Use it",
        "",
        f"* `emonext train --params {shlex.quote(files['best_params'])}`",
        "* `dvc exp run " + " ".join(f"-S {shlex.quote(item)}" for item in overrides) + "`",
        f"* checkpoint of the best trial: `{outcome['best_checkpoint']}`",
        "",
        "## Where",
        "",
        f"* MLflow parent run `{outcome['mlflow_run_id']}` in `{outcome['tracking_uri']}` "
        "(one nested run per trial)",
        f"* Ray Tune results and checkpoints: `{outcome['storage_path']}`",
        f"* {', '.join(f'`{path}`' for path in files.values())}",
    ]
    return "\n".join(lines)


@task(name="tune", cache_policy=NO_CACHE)
def tune(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Search ``tune.search_space`` with Ray Tune on ``data.root``; write the best configuration.

    Returns:
        The outcome: best values, metric, trial and checkpoint, per-trial rows, output files and
        the MLflow parent run.
    """
    from emonext.tuning import run_tune

    params = load_params(params_file, overrides or [])
    outcome = run_tune(params, progress=False).to_dict()
    create_table_artifact(
        key=TUNE_TRIALS_KEY,
        table=trial_rows(outcome),
        description=f"Ray Tune trials of {params.tune.name!r}: values, {outcome['metric']}, epochs, fate",
    )
    create_markdown_artifact(
        key=TUNE_SUMMARY_KEY,
        markdown=tuning_markdown(outcome),
        description="The best configuration found and how to train with it",
    )
    get_run_logger().info(
        "tune: best %s %.4f (trial %s) of %d trial(s)",
        outcome["metric"],
        outcome["best_value"],
        outcome["best_trial"],
        outcome["num_trials"],
    )
    return outcome
