"""Ray Tune search on the bundled sample: trials, ASHA, failures, outputs and MLflow runs.

The searches share one local Ray engine (about 5 s to start), opened by a module fixture;
``run_tune`` joins it instead of starting its own.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from emonext.config import ConfigError, Params, RayConfig, load_params
from emonext.tuning import (
    BEST_FILE,
    BEST_PARAMS_FILE,
    TRIALS_FILE,
    RecordingASHA,
    TuneOutcome,
    run_tune,
    search_space,
    with_values,
    yaml_scalar,
)
from tests.conftest import PARAMS_FILE, TINY, tiny_params

SEARCH_KEYS = ["train.lr", "train.sa_lambda", "train.batch_size", "train.label_smoothing", "model.drop_path"]


def tune_overrides(folder: Path, *extra: str) -> list[str]:
    """TINY plus a small search writing everything into ``folder``."""
    return [
        *TINY,
        f"train.output_dir={folder / 'train'}",
        "tune.num_samples=3",
        "ray.num_cpus=2",
        f"tune.output_dir={folder / 'tune'}",
        f"register.store_dir={folder / 'mlflow'}",
        *extra,
    ]


def mlflow_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def child_runs(outcome: TuneOutcome) -> list[Any]:
    client = mlflow_client(outcome.tracking_uri)
    parent = client.get_run(outcome.mlflow_run_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'"
    )


# ------------------------------------------------------------------------------------------------
# Without Ray


def test_search_space_follows_the_params(params: Params) -> None:
    space = search_space(params)
    assert list(space) == SEARCH_KEYS
    assert type(space["train.lr"]).__name__ == "Float" and space["train.lr"].lower == 5.0e-4
    assert space["train.batch_size"].categories == [32, 64, 128]


def test_trial_values_are_validated(params: Params) -> None:
    assert with_values(params, {"train.lr": 1e-3, "model.drop_path": 0.2}).model.drop_path == 0.2
    with pytest.raises(ConfigError, match=r"train\.lr"):
        with_values(params, {"train.lr": -1.0})


@pytest.mark.parametrize("value", [1e-05, 0.00123, 64, 0.1, True])
def test_override_values_read_back_as_yaml(value: Any) -> None:
    assert yaml.safe_load(yaml_scalar(value)) == value


def test_asha_records_the_trials_it_stops_before_the_last_epoch() -> None:
    scheduler = RecordingASHA(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_accuracy", "max")
    good, bad = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="bad")
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, {"epoch": 1, "val_accuracy": 0.5}) == "CONTINUE"
    assert scheduler.on_trial_result(None, bad, {"epoch": 1, "val_accuracy": 0.1}) == "STOP"
    assert scheduler.on_trial_result(None, good, {"epoch": 3, "val_accuracy": 0.6}) == "STOP"  # max_t
    assert scheduler.stopped == {"bad"}


def test_the_search_fails_when_every_trial_fails(tmp_path: Path) -> None:
    from emonext.tuning import FAILED, TrialRecord, _finish

    params = tiny_params(tmp_path / "train", f"tune.output_dir={tmp_path / 'tune'}")
    records = [
        TrialRecord("t0", {"train.lr": 1e-3}, status=FAILED, error="FloatingPointError: loss is nan"),
        TrialRecord("t1", {"train.lr": 2e-3}, status=FAILED, error="ValueError: bad"),
    ]
    with pytest.raises(
        RuntimeError, match=r"all 2 trial\(s\) failed; the first, t0: FloatingPointError: loss is nan"
    ):
        _finish(params, records, "run", "sqlite:///x.db", str(tmp_path / "ray"), 0.0)
    rows = list(csv.DictReader((tmp_path / "tune" / TRIALS_FILE).open()))
    assert [(row["trial_id"], row["status"], row["error"]) for row in rows] == [
        ("t0", "failed", "FloatingPointError: loss is nan"),
        ("t1", "failed", "ValueError: bad"),
    ]
    assert not (tmp_path / "tune" / BEST_PARAMS_FILE).exists()


# ------------------------------------------------------------------------------------------------
# Searches


@pytest.fixture(scope="module")
def ray_engine() -> Iterator[None]:
    """One local Ray for the module's searches, in a short folder (its socket paths must be short)."""
    from emonext.ray_engine import ray_session

    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        with ray_session(RayConfig(address=None, num_cpus=2, temp_dir=temp_dir)):
            yield
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass(frozen=True)
class Search:
    params: Params
    overrides: list[str]
    outcome: TuneOutcome


@pytest.fixture(scope="module")
def search(ray_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Search]:
    """Three tiny trials of three epochs: ASHA (rungs at epochs 1 and 2) may stop some."""
    folder = tmp_path_factory.mktemp("tune")
    overrides = tune_overrides(folder, "train.epochs=3", "tune.reduction_factor=2")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        params = load_params(PARAMS_FILE, overrides)
        yield Search(params, overrides, run_tune(params, progress=False))


def read_trials(outcome: TuneOutcome) -> list[dict[str, str]]:
    with open(outcome.files["trials"], newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_every_trial_finishes_or_is_stopped_by_asha(search: Search) -> None:
    outcome, epochs = search.outcome, search.params.train.epochs
    rows = read_trials(outcome)
    assert outcome.num_trials == len(rows) == 3 and not outcome.failed
    for row in rows:
        assert row["status"] in ("completed", "stopped"), row
        stopped = row["status"] == "stopped"
        assert row["stopped_by_asha"] == str(stopped)
        assert (int(row["epochs"]) < epochs) if stopped else (int(row["epochs"]) == epochs)
        assert Path(row["checkpoint"]).is_file()
    assert sorted(outcome.stopped_early) == sorted(
        row["trial_id"] for row in rows if row["status"] == "stopped"
    )
    assert set(rows[0]) >= {"trial_id", *SEARCH_KEYS, "epochs", "best_val_accuracy", "last_val_accuracy"}


@pytest.mark.slow
def test_best_is_the_maximum_over_the_trials(search: Search) -> None:
    outcome = search.outcome
    best = json.loads(Path(outcome.files["best"]).read_text())
    rows = read_trials(outcome)
    assert best["value"] == max(float(row["best_val_accuracy"]) for row in rows) == outcome.best_value
    winner = next(row for row in rows if row["trial_id"] == best["trial_id"])
    assert float(winner["best_val_accuracy"]) == best["value"]
    assert best["values"] == outcome.best_values and list(best["values"]) == SEARCH_KEYS
    assert best["metric"] == "val_accuracy" and best["checkpoint"] == outcome.best_checkpoint
    assert best["dvc_command"].startswith("dvc exp run -S train.lr=")


@pytest.mark.slow
def test_best_params_file_is_the_base_params_plus_the_best_values(search: Search) -> None:
    from emonext.checkpoint import read_checkpoint

    outcome = search.outcome
    best_params = load_params(outcome.files["best_params"])
    assert best_params.model_dump() == with_values(search.params, outcome.best_values).model_dump()
    assert best_params.train.lr == outcome.best_values["train.lr"]
    assert best_params.train.batch_size == outcome.best_values["train.batch_size"]
    # The --set overrides in best.json say the same to the original params file.
    overridden = load_params(PARAMS_FILE, [*search.overrides, *outcome.overrides])
    assert overridden.model_dump() == best_params.model_dump()
    # The best trial's checkpoint was trained with those values.
    checkpoint = read_checkpoint(outcome.best_checkpoint)
    assert checkpoint.params["train"]["lr"] == outcome.best_values["train.lr"]
    assert checkpoint.model_config.drop_path == outcome.best_values["model.drop_path"]


@pytest.mark.slow
def test_mlflow_has_a_parent_run_with_one_nested_run_per_trial(search: Search) -> None:
    outcome = search.outcome
    client = mlflow_client(outcome.tracking_uri)
    parent = client.get_run(outcome.mlflow_run_id)
    assert parent.info.run_name == "emonext-tune" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_accuracy"] == outcome.best_value
    assert parent.data.params["train.lr"] == str(search.params.train.lr)  # the base params
    assert parent.data.params["best.train.lr"] == str(outcome.best_values["train.lr"])
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {BEST_PARAMS_FILE, BEST_FILE, TRIALS_FILE, "search_space.json"}
    children = child_runs(outcome)
    assert len(children) == search.params.tune.num_samples
    rows = {row["trial_id"]: row for row in read_trials(outcome)}
    for child in children:
        row = rows[child.data.tags["emonext.trial_id"]]
        assert child.info.status == "FINISHED"
        assert set(child.data.params) == set(SEARCH_KEYS)
        assert float(child.data.params["train.lr"]) == float(row["train.lr"])
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [metric.step for metric in history] == list(range(1, int(row["epochs"]) + 1))
        assert child.data.tags["emonext.stopped_by_asha"] == row["stopped_by_asha"].lower()


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    ray_engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # 7 does not divide the backbone's 320 features: the model cannot be built for that trial.
    space = "{model: {attention_tokens: {distribution: choice, values: [16, 7]}}}"
    params = load_params(
        PARAMS_FILE,
        tune_overrides(
            tmp_path, "tune.num_samples=2", "tune.seed=1", "train.epochs=1", f"tune.search_space={space}"
        ),
    )
    outcome = run_tune(params, progress=False)
    rows = {row["model.attention_tokens"]: row for row in read_trials(outcome)}
    assert set(rows) == {"16", "7"}, "seed 1 draws both values"
    assert rows["7"]["status"] == "failed" and "attention_tokens=7 must divide" in rows["7"]["error"]
    assert rows["16"]["status"] == "completed" and outcome.best_values == {"model.attention_tokens": 16}
    assert outcome.failed == [rows["7"]["trial_id"]]
    runs = {run.data.tags["emonext.trial_id"]: run for run in child_runs(outcome)}
    assert {trial: run.info.status for trial, run in runs.items()} == {
        rows["7"]["trial_id"]: "FAILED",
        rows["16"]["trial_id"]: "FINISHED",
    }
    assert runs[rows["7"]["trial_id"]].data.tags["emonext.error"] == rows["7"]["error"]


@pytest.mark.slow
def test_a_trial_the_local_engine_cannot_run_is_refused(ray_engine: None, tmp_path: Path) -> None:
    params = load_params(PARAMS_FILE, tune_overrides(tmp_path, "tune.gpus_per_trial=1"))
    with pytest.raises(ValueError, match=r"tune\.gpus_per_trial=1\.0: the local Ray has 0 GPU"):
        run_tune(params, progress=False)
