"""Prefect artifacts of a pipeline run: data report, metrics summary, MLflow links.

The step tasks can be served from the cache, and a cached task's body does not run, so the
artifacts are made by these separate, never-cached tasks from the steps' results: every run gets
its artifacts, whether its steps ran or were cached. Artifact keys are stable, so the Prefect UI
shows each one's history across runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

CLEAN_REPORT_KEY = "emonext-clean-report"
DATA_SUMMARY_KEY = "emonext-data-summary"
TRAINING_SUMMARY_KEY = "emonext-training-summary"
MLFLOW_RUN_KEY = "emonext-mlflow-run"
MODEL_VERSION_KEY = "emonext-model-version"

#: A step's outcome in a flow: its final state's name ("Completed", "Cached") and its result.
Outcomes = Mapping[str, Mapping[str, Any]]


def format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_number(cell) for cell in row) + " |" for row in rows]
    return lines


def _states(outcomes: Outcomes) -> list[str]:
    return markdown_table(["step", "state"], [[step, outcome["state"]] for step, outcome in outcomes.items()])


def clean_report_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cleaning report as table rows: kept faces, then each drop reason that dropped any,
    with counts per class."""
    kept = dict(report.get("kept_by_class") or {})
    by_reason: Mapping[str, Mapping[str, int]] = report.get("dropped_by_class") or {}
    classes = list(kept) or list(next(iter(by_reason.values()), {}))
    rows = [{"fate": "kept", **{name: kept.get(name, 0) for name in classes}, "total": sum(kept.values())}]
    for reason, counts in by_reason.items():
        if not any(counts.values()):
            continue  # the library reports every reason; a run usually drops for a few
        rows.append(
            {
                "fate": f"dropped: {reason}",
                **{name: counts.get(name, 0) for name in classes},
                "total": sum(counts.values()),
            }
        )
    return rows


@task(name="publish-data-report", cache_policy=NO_CACHE)
def publish_data_report(outcomes: Outcomes) -> None:
    """Artifacts of the data steps: the cleaning report table and a scrape/clean/split summary."""
    clean = outcomes["clean"]["result"]
    split = outcomes["split"]["result"]
    scrape = outcomes["scrape"]["result"]
    create_table_artifact(
        key=CLEAN_REPORT_KEY,
        table=clean_report_rows(clean),
        description=(
            f"Cleaning: {clean['kept']} faces kept of {clean['faces']} from {clean['inputs']} inputs, "
            f"{clean['dropped_total']} dropped; counts per drop reason and class."
        ),
    )
    counts: Mapping[str, Mapping[str, int]] = split["counts"]
    classes = list(next(iter(counts.values()), {}))
    lines = [
        "# Data",
        "",
        *_states(outcomes),
        "",
        "## Scrape",
        "",
        (
            f"{'enabled' if scrape.get('enabled') else 'disabled (kept the previous folder)'}: "
            f"{scrape['ok']} new, {scrape['duplicate']} duplicates, {scrape['skipped']} already done, "
            f"{scrape['failed']} failed, into `{scrape['output_dir']}`"
        ),
        "",
        "## Clean",
        "",
        f"{clean['kept']} faces kept of {clean['faces']} ({clean['inputs']} inputs), "
        f"{clean['dropped_total']} dropped, in `{clean['output_dir']}`",
        "",
        "## Split",
        "",
        *markdown_table(
            ["split", *classes, "total"],
            [[name, *per_class.values(), sum(per_class.values())] for name, per_class in counts.items()],
        ),
        "",
        f"in `{split['output_dir']}`",
    ]
    create_markdown_artifact(
        key=DATA_SUMMARY_KEY, markdown="\n".join(lines), description="Scrape, clean and split"
    )


def training_markdown(outcomes: Outcomes) -> str:
    """The run summary: step states, training summary, test metrics per class, registration."""
    train = outcomes["train"]["result"]
    evaluation = outcomes["evaluate"]["result"]
    registration = outcomes["register"]["result"]
    summary = train["summary"]
    report = evaluation["report"]
    aliases = ", ".join(registration.get("aliases") or []) or "none"
    lines = [
        f"# {registration['model_name']} version {registration['version']} ({aliases})",
        "",
        *_states(outcomes),
        "",
        f"## Training ({train['model']})",
        "",
        *markdown_table(
            ["best epoch", "best val accuracy", "epochs run", "final train loss", "minutes", "stopped early"],
            [
                [
                    summary["best_epoch"],
                    summary["best_val_accuracy"],
                    summary["epochs_run"],
                    summary["final_train_loss"],
                    format_number(summary["train_minutes"], 2),
                    summary["stop_reason"] or "no",
                ]
            ],
        ),
        "",
        f"## Test metrics (split `{evaluation['split']}`, {report['num_samples']} faces)",
        "",
        *markdown_table(
            ["accuracy", "macro-F1", "weighted-F1"],
            [[report["accuracy"], report["macro_f1"], report["weighted_f1"]]],
        ),
        "",
        *markdown_table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [name, scores["precision"], scores["recall"], scores["f1"], scores["support"]]
                for name, scores in report["per_class"].items()
            ],
        ),
        "",
        "## Registry",
        "",
        f"* model: `{registration['model_uri'] or registration['model_name']}`, aliases: {aliases}",
        f"* {'promoted to champion' if registration['promoted'] else 'kept the champion'}: "
        f"{registration['reason']}",
        f"* {registration['metric']}: {format_number(registration['challenger_score'])} "
        f"(champion: {format_number(registration['champion_score'])})",
        f"* MLflow run `{registration['run_id']}` in `{registration['tracking_uri']}`"
        + (f": [open]({registration['run_url']})" if registration.get("run_url") else ""),
    ]
    return "\n".join(lines)


def model_version_url(registration: Mapping[str, Any]) -> str | None:
    """The MLflow UI page of the registered version, when the store is a tracking server."""
    uri = str(registration["tracking_uri"])
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/models/{registration['model_name']}/versions/{registration['version']}"


@task(name="publish-training-report", cache_policy=NO_CACHE)
def publish_training_report(outcomes: Outcomes) -> None:
    """Artifacts of the training steps: the metrics summary and links to the MLflow run and version."""
    registration = outcomes["register"]["result"]
    create_markdown_artifact(
        key=TRAINING_SUMMARY_KEY,
        markdown=training_markdown(outcomes),
        description="Training summary, test metrics per class and the registered version",
    )
    run_url, version_url = registration.get("run_url"), model_version_url(registration)
    if run_url:
        create_link_artifact(
            key=MLFLOW_RUN_KEY, link=run_url, link_text=f"MLflow run {registration['run_id']}"
        )
    if version_url:
        create_link_artifact(
            key=MODEL_VERSION_KEY,
            link=version_url,
            link_text=f"{registration['model_name']} version {registration['version']}",
        )
    if not run_url:
        # A local SQLite store has no web page to link to: say where the run and version are.
        uri = registration["tracking_uri"]
        create_markdown_artifact(
            key=MLFLOW_RUN_KEY,
            markdown="\n".join(
                [
                    f"# MLflow run `{registration['run_id']}`",
                    "",
                    f"* tracking URI: `{uri}`",
                    f"* run id: `{registration['run_id']}`",
                    f"* model version: `{registration['model_uri']}` "
                    f"(aliases: {', '.join(registration.get('aliases') or []) or 'none'})",
                    "",
                    f"Browse it with `mlflow ui --backend-store-uri {uri}`.",
                ]
            ),
            description="Where the MLflow run and the registered version are",
        )
