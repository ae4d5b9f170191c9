"""The tuning flow on the bundled sample, against a temporary Prefect API; the ``emonext tune`` CLI."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.flows.conftest import SAMPLE, write_tiny_params

runner = CliRunner()


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """A short folder for a local Ray: its unix socket paths must stay under 108 characters."""
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def artifacts(flow_run_id: Any) -> dict[str, Any]:
    """The artifacts a flow run (and its task runs) created, by key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in found}


@pytest.mark.slow
def test_tuning_flow_prepares_the_data_and_records_the_best(
    prefect_api: None, tmp_path: Path, ray_temp_dir: Path
) -> None:
    from mlflow import MlflowClient

    from emonext.config import load_params
    from flows.tuning import summary_table, tuning
    from tasks.tuning import TUNE_SUMMARY_KEY, TUNE_TRIALS_KEY

    params_file = write_tiny_params(
        tmp_path,
        ray={"num_cpus": 2, "temp_dir": str(ray_temp_dir)},
        tune={"num_samples": 2, "output_dir": str(tmp_path / "runs" / "tune")},
    )
    state = tuning(params_file=str(params_file), overrides=[], return_state=True)
    assert state.is_completed(), state.message
    outcomes = state.result()
    assert list(outcomes) == ["scrape", "clean", "split", "tune"]
    assert all(outcome["state"] == "Completed" for outcome in outcomes.values())

    result = outcomes["tune"]["result"]
    assert result["num_trials"] == 2 and not result["failed"]
    best = json.loads(Path(result["files"]["best"]).read_text())
    assert (
        best["value"]
        == result["best_value"]
        == max(row[f"best_{result['metric']}"] for row in result["trials"])
    )
    # The search trained on what the data steps wrote, and its best params file trains the same way.
    params = load_params(params_file)
    best_params = load_params(result["files"]["best_params"])
    assert best_params.data.root == params.data.root == tmp_path / "data" / "split"
    assert best_params.train.lr == result["best_values"]["train.lr"]

    client = MlflowClient(tracking_uri=result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2 and all(
        child.data.metrics.get("val_accuracy") is not None for child in children
    )

    published = artifacts(state.state_details.flow_run_id)
    assert {TUNE_TRIALS_KEY, TUNE_SUMMARY_KEY, "emonext-data-summary"} <= set(published)
    table = published[TUNE_TRIALS_KEY].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert sorted(row["trial_id"] for row in rows) == sorted(row["trial_id"] for row in result["trials"])
    assert f"Best {result['metric']}" in published[TUNE_SUMMARY_KEY].data
    assert "dvc exp run -S train.lr=" in published[TUNE_SUMMARY_KEY].data

    # What `python -m flows.tuning run` prints.
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(outcomes, 12.3))
    printed = console.file.getvalue()
    assert (
        "best val_accuracy" in printed and result["files"]["best_params"] in printed and "12.3 s" in printed
    )


def test_tune_command_has_help() -> None:
    from emonext.cli import app

    result = runner.invoke(app, ["tune", "--help"])
    assert result.exit_code == 0, result.output
    assert "--address" in result.output


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    from emonext.cli import app

    params_file = write_tiny_params(tmp_path)
    result = runner.invoke(
        app,
        ["tune", "--params", str(params_file), "--set", f"data.root={SAMPLE}", "--address", "127.0.0.1:1"],
    )
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "ray.address='127.0.0.1:1'" in output and "no Ray cluster answers there" in output
    assert "Traceback" not in output
