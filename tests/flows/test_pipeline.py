"""The pipeline flow end to end on the bundled sample, against a temporary Prefect API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from emonext.fileio import content_hash
from tests.flows.conftest import write_tiny_params

STEPS = ("scrape", "clean", "split", "train", "evaluate", "register")


@dataclass(frozen=True)
class PipelineRun:
    """A completed run of the pipeline flow."""

    folder: Path
    params_file: Path
    outcomes: dict[str, dict[str, Any]]
    flow_run_id: UUID


def run_pipeline(params_file: Path, *overrides: str) -> Any:
    """Run the ``pipeline`` flow in this process and return its final state."""
    from flows.pipeline import pipeline

    return pipeline(params_file=str(params_file), overrides=list(overrides), return_state=True)


def subflow_ids(flow_run_id: UUID) -> list[UUID]:
    """The sub-flow runs of a pipeline flow run (the data and training flows)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
    return [run.id for run in subflows]


def task_run_states(flow_run_id: UUID) -> dict[str, str]:
    """State name per step task run of a pipeline flow run (its tasks run in two sub-flows)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=subflow_ids(flow_run_id)))
        )
    states = {run.task_key.rsplit("-", 1)[0]: str(run.state_name) for run in task_runs}
    return {step: states[step] for step in STEPS if step in states}


def registered_versions(registration: dict[str, Any]) -> dict[str, list[str]]:
    """Version -> aliases of the registered model, read from the MLflow store."""
    from mlflow import MlflowClient

    uri = registration["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registration["model_name"]
    # search_model_versions leaves the aliases out: read each version.
    versions = [str(found.version) for found in client.search_model_versions(f"name = '{name}'")]
    return {version: sorted(client.get_model_version(name, version).aliases) for version in versions}


@pytest.fixture(scope="module")
def first_run(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    folder = tmp_path_factory.mktemp("pipeline")
    params_file = write_tiny_params(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        state = run_pipeline(params_file)
        assert state.is_completed(), state.message
        yield PipelineRun(folder, params_file, state.result(), state.state_details.flow_run_id)


def test_first_run_registers_version_1_as_champion(first_run: PipelineRun) -> None:
    outcomes = first_run.outcomes
    assert tuple(outcomes) == STEPS
    assert {step: outcome["state"] for step, outcome in outcomes.items()} == dict.fromkeys(STEPS, "Completed")
    registration = outcomes["register"]["result"]
    assert registration["version"] == "1"
    assert "champion" in registration["aliases"]
    assert registration["promoted"] is True
    assert registered_versions(registration) == {"1": ["challenger", "champion"]}
    assert (first_run.folder / "runs" / "register" / "registration.json").is_file()
    assert task_run_states(first_run.flow_run_id) == dict.fromkeys(STEPS, "Completed")


def test_run_creates_artifacts(first_run: PipelineRun) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from tasks import reports

    keys = [
        reports.CLEAN_REPORT_KEY,
        reports.DATA_SUMMARY_KEY,
        reports.TRAINING_SUMMARY_KEY,
        reports.MLFLOW_RUN_KEY,
    ]
    with get_client(sync_client=True) as client:
        # This run's artifacts only: other tests in the session publish under the same keys.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys),
                flow_run_id=ArtifactFilterFlowRunId(
                    any_=[first_run.flow_run_id, *subflow_ids(first_run.flow_run_id)]
                ),
            )
        )
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == set(keys)
    assert by_key[reports.CLEAN_REPORT_KEY].type == "table"
    clean_table = str(by_key[reports.CLEAN_REPORT_KEY].data)
    assert "kept" in clean_table
    assert "dropped: near_duplicate" in clean_table
    summary = str(by_key[reports.TRAINING_SUMMARY_KEY].data)
    accuracy = first_run.outcomes["evaluate"]["result"]["report"]["accuracy"]
    assert "version 1 (challenger, champion)" in summary
    assert f"{accuracy:.4f}" in summary
    assert "| disgust |" in summary  # the per-class test metrics
    registration = first_run.outcomes["register"]["result"]
    mlflow_note = str(by_key[reports.MLFLOW_RUN_KEY].data)  # a SQLite store: no URL, so markdown
    assert registration["run_id"] in mlflow_note
    assert registration["tracking_uri"] in mlflow_note


def test_second_run_is_served_from_the_cache(first_run: PipelineRun) -> None:
    state = run_pipeline(first_run.params_file)

    assert state.is_completed(), state.message
    expected = {"scrape": "Completed", **dict.fromkeys(STEPS[1:], "Cached")}
    assert {step: outcome["state"] for step, outcome in state.result().items()} == expected
    assert task_run_states(state.state_details.flow_run_id) == expected
    # An unchanged pipeline registers nothing new.
    assert state.result()["register"]["result"]["version"] == "1"
    assert registered_versions(state.result()["register"]["result"]) == {"1": ["challenger", "champion"]}


def test_missing_output_reruns_that_step(first_run: PipelineRun) -> None:
    (first_run.folder / "runs" / "train" / "summary.json").unlink()

    state = run_pipeline(first_run.params_file)

    assert state.is_completed(), state.message
    states = {step: outcome["state"] for step, outcome in state.result().items()}
    assert states["clean"] == states["split"] == "Cached"
    assert states["train"] == "Completed"
    assert (first_run.folder / "runs" / "train" / "summary.json").is_file()


def test_changed_params_rerun_only_the_steps_reading_them(first_run: PipelineRun) -> None:
    state = run_pipeline(first_run.params_file, "evaluate.batch_size=100")

    assert state.is_completed(), state.message
    states = {step: outcome["state"] for step, outcome in state.result().items()}
    assert states == {"scrape": "Completed", **dict.fromkeys(STEPS[1:], "Cached"), "evaluate": "Completed"}


def test_failing_step_fails_the_run_and_keeps_earlier_outputs(first_run: PipelineRun) -> None:
    clean_dir, split_dir = first_run.folder / "data" / "clean", first_run.folder / "data" / "split"
    before = content_hash(clean_dir), content_hash(split_dir)
    missing = first_run.folder / "no-such-source"

    state = run_pipeline(
        first_run.params_file, f"clean.sources=[{{name: fer2013, path: {missing}, pre_cropped: true}}]"
    )

    assert state.is_failed()
    assert "FileNotFoundError" in str(state.message)
    assert f"{missing} does not exist" in str(state.message)
    assert (content_hash(clean_dir), content_hash(split_dir)) == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        state.result()
