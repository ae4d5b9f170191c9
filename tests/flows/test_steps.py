"""Step specs, cache fingerprints, retries and the command line, without running a flow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emonext.config import load_params
from tests.flows.conftest import SAMPLE, write_tiny_params


def test_pipeline_steps_follow_the_flows_task_order() -> None:
    from flows.data_pipeline import DATA_STEPS
    from flows.pipeline import PIPELINE_STEPS
    from flows.training_pipeline import TRAINING_STEPS
    from tasks.steps import SPECS, STEP_TASKS

    assert PIPELINE_STEPS == ("scrape", "clean", "split", "train", "evaluate", "register")
    assert tuple(step.name for step in (*DATA_STEPS, *TRAINING_STEPS)) == PIPELINE_STEPS
    assert tuple(STEP_TASKS) == tuple(SPECS) == PIPELINE_STEPS


def test_file_names_match_the_library() -> None:
    from emonext import checkpoint, registry, splitting
    from emonext.cleaning import MANIFEST_FILE
    from emonext.evaluation import evaluate
    from emonext.training import trainer
    from tasks import steps

    assert (steps.BEST_CHECKPOINT, steps.LAST_CHECKPOINT) == (
        checkpoint.BEST_CHECKPOINT,
        checkpoint.LAST_CHECKPOINT,
    )
    assert (steps.REPORT_FILE, steps.CONFUSION_FILE, steps.CONFUSION_PLOT) == (
        evaluate.REPORT_FILE,
        evaluate.CONFUSION_FILE,
        evaluate.CONFUSION_PLOT,
    )
    assert (steps.METRICS_FILE, steps.SUMMARY_FILE) == (trainer.METRICS_FILE, trainer.SUMMARY_FILE)
    assert steps.REGISTRATION_FILE == registry.REGISTRATION_FILE
    assert steps.CLEAN_MANIFEST == MANIFEST_FILE
    assert splitting.MANIFEST_FILE == MANIFEST_FILE  # what split reads of the clean output


@pytest.mark.parametrize(
    ("environment", "configured", "expected"),
    [
        (None, None, "sqlite:///"),
        (None, "http://mlflow:5000", "http://mlflow:5000"),
        ("http://env:5000", None, "http://env:5000"),
        ("http://env:5000", "http://x", "http://env:5000"),
    ],
)
def test_tracking_uri_prefers_the_environment_then_params_then_the_local_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environment: str | None,
    configured: str | None,
    expected: str,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if environment:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", environment)
    params = load_params(write_tiny_params(tmp_path, register={"tracking_uri": configured}))
    uri = params.register.effective_tracking_uri()
    assert uri.startswith(expected)
    if expected == "sqlite:///":
        assert uri.endswith(str(params.register.store_dir / "mlflow.db"))


def test_fingerprint_follows_content_not_paths(tmp_path: Path) -> None:
    from tasks.caching import fingerprint
    from tasks.steps import SPECS

    source = tmp_path / "faces"
    shutil.copytree(SAMPLE / "val", source)
    params_file = write_tiny_params(
        tmp_path,
        clean={"sources": [{"name": "faces", "path": str(source), "pre_cropped": True}]},
    )
    params = load_params(params_file)
    spec = SPECS["clean"]
    output = params.clean.output_dir

    missing = fingerprint(spec, params)
    assert missing.key is None
    assert missing.missing_outputs == (f"clean ({output})",)

    output.mkdir(parents=True)
    (output / "manifest.csv").write_text("path,label\n")
    key = fingerprint(spec, params).key
    assert key is not None
    assert key.startswith("emonext-clean-")

    image = next(path for path in source.rglob("*") if path.is_file())
    image.write_bytes(image.read_bytes())  # touched, same content
    assert fingerprint(spec, params).key == key
    image.write_bytes(image.read_bytes() + b"\0")  # same path, other content
    changed = fingerprint(spec, params).key
    assert changed not in (None, key)

    (output / "manifest.csv").write_text("path,label\nsomething,else\n")  # outputs changed elsewhere
    assert fingerprint(spec, params).key not in (None, key, changed)

    other_params = load_params(params_file, ["clean.blur_threshold=20"])
    assert fingerprint(spec, other_params).key != fingerprint(spec, params).key
    # Keys name only what the step reads: a training setting does not touch the clean step's key.
    assert fingerprint(spec, load_params(params_file, ["train.lr=1e-3"])).key == fingerprint(spec, params).key

    shutil.rmtree(source)
    assert fingerprint(spec, params).missing_inputs == (f"source:faces ({source})",)


def test_scrape_gets_retries_with_exponential_backoff(tmp_path: Path) -> None:
    from tasks.steps import clean, configured, scrape

    params = load_params(
        write_tiny_params(tmp_path, orchestration={"scrape_retries": 3, "retry_backoff": 10})
    )
    task = configured(scrape, params)
    assert task.retries == 3
    assert task.retry_delay_seconds == [10, 20, 40]
    assert configured(clean, params) is clean
    no_retries = load_params(write_tiny_params(tmp_path, orchestration={"scrape_retries": 0}))
    assert configured(scrape, no_retries).retries == 0


def test_scrape_retries_only_transient_errors() -> None:
    from prefect.states import Failed

    from emonext.config import ConfigError
    from tasks.steps import _scrape_error_is_transient, scrape

    def transient(error: BaseException) -> bool:
        return _scrape_error_is_transient(scrape, None, Failed(data=error))  # type: ignore[arg-type]

    assert transient(ConnectionError("reset by peer"))
    assert transient(TimeoutError())
    assert not transient(ConfigError("scrape.engine: bad"))
    assert not transient(ValueError("class 'a/b': not a safe folder name"))


def test_cli_reports_bad_params_before_running(tmp_path: Path) -> None:
    from flows.pipeline import app

    params_file = write_tiny_params(tmp_path)
    for command in ("run", "serve"):
        result = CliRunner().invoke(app, [command, "--params", str(params_file), "--set", "train.lr=-1"])
        assert result.exit_code == 2, result.output
        assert "train.lr" in result.output
    result = CliRunner().invoke(app, ["run", "--params", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "params file not found" in result.output


def test_serve_needs_a_prefect_server(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import app

    with temporary_settings(updates={PREFECT_API_URL: None}):
        result = CliRunner().invoke(app, ["serve", "--params", str(write_tiny_params(tmp_path))])
    assert result.exit_code == 2, result.output
    assert "prefect server start" in result.output


def test_training_summary_markdown_without_val_split() -> None:
    from tasks.reports import clean_report_rows, training_markdown

    nan = float("nan")
    outcomes = {
        "train": {
            "state": "Completed",
            "result": {
                "model": "emonext/convnext_atto",
                "summary": {
                    "best_epoch": 2,
                    "best_val_accuracy": nan,
                    "epochs_run": 2,
                    "final_train_loss": 1.9,
                    "train_minutes": 0.1,
                    "stop_reason": "",
                },
            },
        },
        "evaluate": {
            "state": "Cached",
            "result": {
                "split": "test",
                "report": {
                    "accuracy": 0.5,
                    "macro_f1": 0.4,
                    "weighted_f1": 0.45,
                    "num_samples": 2,
                    "per_class": {"happy": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}},
                },
            },
        },
        "register": {
            "state": "Completed",
            "result": {
                "model_name": "emonext",
                "version": "3",
                "aliases": ["challenger"],
                "promoted": False,
                "reason": "test accuracy 0.5 does not beat champion v2's 0.6",
                "metric": "accuracy",
                "challenger_score": 0.5,
                "champion_score": 0.6,
                "run_id": "abc",
                "tracking_uri": "http://mlflow:5000",
                "run_url": "http://mlflow:5000/#/experiments/1/runs/abc",
                "model_uri": "models:/emonext/3",
            },
        },
    }
    markdown = training_markdown(outcomes)
    assert "# emonext version 3 (challenger)" in markdown
    assert "| evaluate | Cached |" in markdown
    assert "n/a" in markdown  # no val split: NaN best val accuracy
    assert "| happy | 1.0000 | 0.5000 | 0.6700 | 2 |" in markdown
    assert "[open](http://mlflow:5000/#/experiments/1/runs/abc)" in markdown
    assert "accuracy: 0.5000 (champion: 0.6000)" in markdown

    rows = clean_report_rows(
        {
            "kept_by_class": {"happy": 3, "sad": 1},
            "dropped_by_class": {"blurry": {"happy": 1, "sad": 0}, "no_face": {"happy": 0, "sad": 0}},
        }
    )
    assert rows == [
        {"fate": "kept", "happy": 3, "sad": 1, "total": 4},
        {"fate": "dropped: blurry", "happy": 1, "sad": 0, "total": 1},
    ]
