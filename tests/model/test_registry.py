"""MLflow tracking, registration, promotion and the registered-model loader, on a real SQLite store."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from emonext.config import Params
from emonext.evaluation.evaluate import run_evaluation
from emonext.fileio import content_hash
from emonext.registry import (
    CheckpointError,
    RegistryError,
    fetch_checkpoint,
    load_model,
    register_model,
)
from tests.conftest import SAMPLE, tiny_params

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PORTRAIT = FIXTURES / "justinshenk_fer_justin.jpg"


def _params(trained_run: Path, root: Path, *overrides: str) -> Params:
    return tiny_params(
        trained_run,
        f"evaluate.output_dir={root / 'evaluate'}",
        f"register.store_dir={root / 'mlflow'}",
        f"register.output_dir={root / 'register'}",
        *overrides,
    )


def _champion_version(params: Params) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(params.register.effective_tracking_uri())
    return str(client.get_model_version_by_alias(params.register.model_name, "champion").version)


@pytest.fixture(scope="module")
def store(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Params, dict]]:
    """One store with version 1 (champion) registered from the session's tiny model."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("EMONEXT_MODEL_CACHE", str(root / "cache"))
        params = _params(trained_run, root)
        run_evaluation(params)
        first = register_model(params).to_dict()
        yield params, first


def test_first_version_becomes_champion_with_evidence_logged(store: tuple[Params, dict]) -> None:
    from mlflow import MlflowClient

    params, first = store
    assert first["version"] == "1" and first["promoted"]
    assert first["aliases"] == ["challenger", "champion"]
    written = json.loads((params.register.output_dir / "registration.json").read_text())
    assert written == first

    client = MlflowClient(params.register.effective_tracking_uri())
    run = client.get_run(first["run_id"])
    assert run.data.params["train.lr"] == str(params.train.lr)
    assert run.data.params["model.backbone"] == "convnext_atto"
    history = client.get_metric_history(first["run_id"], "val_accuracy")
    assert [metric.step for metric in history] == list(range(1, params.train.epochs + 1))
    assert run.data.metrics["eval_accuracy"] == pytest.approx(first["challenger_score"])
    assert "eval_f1_happy" in run.data.metrics
    assert run.data.tags["emonext.data_dvc_md5"] == content_hash(SAMPLE)
    assert len(run.data.tags["mlflow.source.git.commit"]) in (40, len("unknown"))
    artifacts = {
        item.path
        for folder in ("evaluation", "training")
        for item in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"evaluation/confusion.png", "evaluation/report.json", "training/metrics.json"} <= artifacts


def test_challenger_must_beat_the_champion_and_versions_are_kept(store: tuple[Params, dict]) -> None:
    params, _ = store
    second = register_model(params)
    assert second.version == "2" and not second.promoted
    assert second.aliases == ["challenger"] and second.champion_version == "1"
    assert "does not beat" in second.reason
    forced = register_model(params, force=True)
    assert forced.promoted and forced.aliases == ["challenger", "champion"]

    from mlflow import MlflowClient

    client = MlflowClient(params.register.effective_tracking_uri())
    versions = sorted(int(item.version) for item in client.search_model_versions("name = 'emonext'"))
    assert versions == [1, 2, 3]


def test_champion_is_rescored_on_different_test_faces(trained_run: Path, store: tuple[Params, dict]) -> None:
    params, _ = store
    on_train = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"split": "train"})})
    run_evaluation(on_train)
    registration = register_model(on_train)
    # Same weights, other faces: the champion is scored on the train faces too, so the scores tie.
    assert registration.champion_score == pytest.approx(registration.challenger_score)
    assert not registration.promoted


def test_stale_evaluation_report_is_refused(store: tuple[Params, dict], tmp_path: Path) -> None:
    params, _ = store
    report_file = params.evaluate.output_dir / "report.json"
    original = report_file.read_text()
    try:
        report_file.write_text(json.dumps({**json.loads(original), "model_md5": "0" * 32}))
        with pytest.raises(ValueError, match="run `emonext evaluate` again"):
            register_model(params)
    finally:
        report_file.write_text(original)


def test_loader_resolves_aliases_versions_runs_and_local_paths(
    store: tuple[Params, dict], trained_run: Path
) -> None:
    params, first = store
    uri = params.register.effective_tracking_uri()
    champion = load_model("models:/emonext@champion", tracking_uri=uri)
    assert champion.version == _champion_version(params) and champion.classes == tuple(params.data.classes)
    by_version = load_model("models:/emonext/1", tracking_uri=uri)
    assert by_version.run_id == first["run_id"]
    latest = load_model("models:/emonext", tracking_uri=uri)
    assert int(latest.version or 0) >= int(champion.version or 0)
    from_run = load_model(f"runs:/{first['run_id']}/model", tracking_uri=uri)
    assert from_run.checkpoint.state_dict.keys() == by_version.checkpoint.state_dict.keys()
    local = load_model(trained_run)
    assert local.version is None
    model_dir = by_version.checkpoint.path.parents[1]
    assert (model_dir / "MLmodel").is_file()
    assert load_model(model_dir).checkpoint.path == by_version.checkpoint.path
    # A version's files never change: the second load is served from the cache.
    assert fetch_checkpoint("models:/emonext/1", uri) == by_version.checkpoint.path


def test_loader_errors_name_the_problem(store: tuple[Params, dict], tmp_path: Path) -> None:
    params, _ = store
    uri = params.register.effective_tracking_uri()
    with pytest.raises(RegistryError, match=r"no alias 'staging'.*aliases: challenger, champion"):
        load_model("models:/emonext@staging", tracking_uri=uri)
    with pytest.raises(RegistryError, match="not found"):
        load_model("models:/nosuch/1", tracking_uri=uri)
    with pytest.raises(RegistryError, match="does not exist"):
        load_model("models:/emonext@champion", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RegistryError, match="unreachable"):
        load_model("models:/emonext@champion", tracking_uri=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_model(garbage)


def test_pyfunc_returns_per_face_probabilities(store: tuple[Params, dict]) -> None:
    import mlflow
    import pandas as pd

    params, _ = store
    mlflow.set_tracking_uri(params.register.effective_tracking_uri())
    mlflow.set_registry_uri(params.register.effective_tracking_uri())
    model = mlflow.pyfunc.load_model("models:/emonext@champion")
    data = PORTRAIT.read_bytes()
    frame = pd.DataFrame({"image": [str(PORTRAIT), data, base64.b64encode(data).decode(), "missing.png"]})
    result = model.predict(frame)
    assert list(result["status"]) == ["face", "face", "face", "error"]
    classes = list(params.data.classes)
    probabilities = result.loc[:2, classes].to_numpy(dtype=float)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)
    assert "missing.png" in result.loc[3, "detail"]
    whole = model.predict(pd.DataFrame({"image": [str(PORTRAIT)]}), params={"detect_faces": False})
    assert int(whole.loc[0, "width"]) == 381


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_probabilities(store: tuple[Params, dict], tmp_path: Path) -> None:
    params, _ = store
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": params.register.effective_tracking_uri(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/emonext@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        payload = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(PORTRAIT.read_bytes()).decode()]],
            },
            "params": {"detect_faces": True},
        }
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text[:2000]
        (face,) = response.json()["predictions"]
        assert face["status"] == "face"
        probabilities = [face[name] for name in params.data.classes]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert face["label"] == params.data.classes[int(np.argmax(probabilities))]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def test_cli_evaluates_a_registered_model_and_reports_registry_errors(
    store: tuple[Params, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from emonext.cli import app

    params, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", params.register.effective_tracking_uri())
    runner = CliRunner()
    common = ["--data", str(SAMPLE), "--split", "val", "--out", str(tmp_path / "eval")]
    result = runner.invoke(app, ["evaluate", "--model", "models:/emonext@champion", *common])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_samples"] == 70
    result = runner.invoke(app, ["evaluate", "--model", "models:/emonext@nope", *common])
    assert result.exit_code == 2 and "no alias 'nope'" in result.output


def test_builtin_model_is_small_documented_and_the_fallback(
    store: tuple[Params, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emonext.registry import BUILTIN_DIR, load_default_model

    weights = BUILTIN_DIR / "model.safetensors"
    assert weights.stat().st_size <= 15 * 1024 * 1024
    card = (BUILTIN_DIR / "MODEL_CARD.md").read_text()
    assert "training command" in card and "Per class" in card and "Confusion matrix" in card
    builtin = load_model("builtin")
    (row,) = builtin.predictor().predict([PORTRAIT])
    assert row.status == "face" and row.probabilities is not None
    assert row.probabilities.sum() == pytest.approx(1.0, abs=1e-5)

    params, _ = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    champion = load_default_model(tracking_uri=params.register.effective_tracking_uri())
    assert champion.version == _champion_version(params)
    empty_store = f"sqlite:///{tmp_path / 'none.db'}"
    assert load_default_model(tracking_uri=empty_store).uri == "builtin"
    assert load_default_model("builtin", tracking_uri=empty_store).uri == "builtin"
