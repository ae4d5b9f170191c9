"""The clean step's shards as Prefect task runs: process pool, thread pool and local Ray agree.

The data flow runs against the temporary Prefect API on the bundled sample's validation faces
(pre-cropped) and three real photos that need face detection, once per task runner, each into
its own folder: the manifests must be byte-identical and the faces the same files. Ray is a real
local engine (2 CPUs, a short temporary folder) started and stopped by the clean step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.data.test_clean import build_photo_source, output_files, report_counts
from tests.flows.conftest import SAMPLE, write_tiny_params


@dataclass(frozen=True)
class CleanRun:
    """A data flow run that cleaned into ``output_dir``."""

    output_dir: Path
    params_file: Path
    flow_run_id: UUID
    seconds: float


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_photo_source(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def ray_temp_dir() -> Iterator[Path]:
    # Ray's unix socket paths must stay under 108 characters: pytest's tmp_path is too deep.
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def shard_params(folder: Path, photos: Path, task_runner: str, ray_temp_dir: Path) -> Path:
    """Params of a data flow that scrapes nothing and cleans the mixed source on 2 workers."""
    return write_tiny_params(
        folder,
        scrape={"enabled": False},
        clean={
            "sources": [
                {"name": "fer2013", "path": str(SAMPLE / "val"), "pre_cropped": True},
                {"name": "photos", "path": str(photos), "pre_cropped": False},
            ],
            "workers": 2,
        },
        orchestration={"task_runner": task_runner},
        ray={"address": None, "num_cpus": 2, "temp_dir": str(ray_temp_dir)},
    )


def run_data_flow(params_file: Path, *overrides: str) -> tuple[Any, float]:
    """Run the data flow (scrape, clean, split) in this process: its final state and seconds."""
    from flows.data_pipeline import data_pipeline

    started = time.perf_counter()
    state = data_pipeline(params_file=str(params_file), overrides=list(overrides), return_state=True)
    return state, time.perf_counter() - started


def clean_task_runs(flow_run_id: UUID) -> tuple[Any, list[Any]]:
    """The flow run's ``clean`` task run and its ``clean-shard`` task runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    (step,) = [run for run in runs if run.task_key.rsplit("-", 1)[0] == "clean"]
    shards = [run for run in runs if run.name.startswith("clean-shard-")]
    return step, sorted(shards, key=lambda run: int(run.name.rsplit("-", 1)[1]))


def ray_processes(temp_dir: Path) -> list[str]:
    """Command lines of processes that belong to the Ray started in ``temp_dir``."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if str(temp_dir) in line]


def clean_with(
    runner: str, tmp_path_factory: pytest.TempPathFactory, photos: Path, ray_temp_dir: Path
) -> CleanRun:
    folder = tmp_path_factory.mktemp(runner)
    params_file = shard_params(folder, photos, runner, ray_temp_dir)
    state, seconds = run_data_flow(params_file)
    assert state.is_completed(), state.message
    outcomes = state.result()
    assert outcomes["clean"]["state"] == "Completed"
    assert outcomes["clean"]["result"]["throughput"]["executor"] == f"prefect {runner}"
    return CleanRun(folder / "data" / "clean", params_file, state.state_details.flow_run_id, seconds)


@pytest.fixture(scope="module")
def process_run(
    prefect_api: None, tmp_path_factory: pytest.TempPathFactory, photos: Path, ray_temp_dir: Path
) -> CleanRun:
    return clean_with("process", tmp_path_factory, photos, ray_temp_dir)


@pytest.fixture(scope="module")
def thread_run(
    prefect_api: None, tmp_path_factory: pytest.TempPathFactory, photos: Path, ray_temp_dir: Path
) -> CleanRun:
    return clean_with("thread", tmp_path_factory, photos, ray_temp_dir)


@pytest.fixture(scope="module")
def ray_run(
    prefect_api: None, tmp_path_factory: pytest.TempPathFactory, photos: Path, ray_temp_dir: Path
) -> CleanRun:
    return clean_with("ray", tmp_path_factory, photos, ray_temp_dir)


def test_process_and_ray_runners_give_identical_outputs(process_run: CleanRun, ray_run: CleanRun) -> None:
    expected = output_files(process_run.output_dir)
    assert (process_run.output_dir / "manifest.csv").read_bytes() == (
        ray_run.output_dir / "manifest.csv"
    ).read_bytes()
    assert output_files(ray_run.output_dir) == expected
    assert report_counts(ray_run.output_dir) == report_counts(process_run.output_dir)
    counts = report_counts(process_run.output_dir)
    assert counts["inputs"] == counts["faces"] == 73  # policy largest: one face per photo
    assert sum(name.endswith(".png") and name.startswith("images/") for name in expected) == counts["kept"]
    throughput = json.loads((ray_run.output_dir / "report.json").read_text())["throughput"]
    assert (throughput["executor"], throughput["workers"]) == ("prefect ray", 2)


def test_thread_runner_gives_the_same_outputs(process_run: CleanRun, thread_run: CleanRun) -> None:
    assert output_files(thread_run.output_dir) == output_files(process_run.output_dir)
    assert report_counts(thread_run.output_dir) == report_counts(process_run.output_dir)


@pytest.mark.parametrize("runner", ["process", "thread", "ray"])
def test_each_shard_is_a_task_run_of_the_clean_step(runner: str, request: pytest.FixtureRequest) -> None:
    run: CleanRun = request.getfixturevalue(f"{runner}_run")
    step, shards = clean_task_runs(run.flow_run_id)
    # 70 pre-cropped faces in shards of at most ceil(73 / (2 workers x 4)) = 10, 3 photos in one.
    assert [shard.name for shard in shards] == [f"clean-shard-{number}" for number in range(len(shards))]
    assert len(shards) == 8
    assert {shard.state_name for shard in shards} == {"Completed"}
    for shard in shards:
        assert [parent.id for parent in shard.task_inputs["__parents__"]] == [step.id]


def test_ray_is_shut_down_after_the_step(ray_run: CleanRun, ray_temp_dir: Path) -> None:
    import ray

    assert not ray.is_initialized()
    deadline = time.monotonic() + 20
    while ray_processes(ray_temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)  # raylet and workers exit shortly after the driver disconnects
    assert not ray_processes(ray_temp_dir)


def test_failing_shard_fails_the_step_and_keeps_the_previous_output(
    process_run: CleanRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    from emonext.cleaning import pipeline

    real = pipeline.process_shard

    def explode_on_shard_2(shard: pipeline.CleanShard) -> list[list[pipeline.FaceResult]]:
        if shard.number == 2:
            raise OSError("No space left on device (simulated)")
        return real(shard)

    # The thread runner runs the shards in this process, where the patch applies.
    before = output_files(process_run.output_dir)
    monkeypatch.setattr(pipeline, "process_shard", explode_on_shard_2)
    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):  # the same params: a cache hit
        state, _ = run_data_flow(process_run.params_file, "orchestration.task_runner=thread")
    assert state.is_failed()
    assert "No space left on device (simulated)" in str(state.message)
    assert output_files(process_run.output_dir) == before
    assert not list(process_run.output_dir.parent.glob(".clean.staging-*"))
    _, shards = clean_task_runs(state.state_details.flow_run_id)
    assert "Failed" in {shard.state_name for shard in shards}
