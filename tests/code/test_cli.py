from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emonext.cli import app
from tests.conftest import PARAMS_FILE, SAMPLE

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [[], ["scrape"], ["clean"], ["split"], ["train"], ["tune"], ["evaluate"], ["compare"], ["params"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_entrypoint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emonext", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "evaluate" in result.stdout


def test_params_command_prints_resolved_config() -> None:
    result = runner.invoke(app, ["params", "--params", str(PARAMS_FILE), "--set", "train.lr=0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["train"]["lr"] == 0.5


def test_bad_override_is_a_clear_error_not_a_traceback() -> None:
    result = runner.invoke(app, ["train", "--params", str(PARAMS_FILE), "--set", "model.arch=alexnet"])
    assert result.exit_code == 2
    assert "model.arch" in result.output and "Traceback" not in result.output


def test_evaluate_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.safetensors"
    result = runner.invoke(
        app, ["evaluate", "--model", str(missing), "--data", str(SAMPLE), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert str(missing) in result.output.replace("\n", "")


def test_evaluate_prints_metrics_json(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", "--model", str(trained_run), "--data", str(SAMPLE), "--split", "val", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["num_samples"] == 70
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert (out / "report.json").is_file() and (out / "confusion.png").is_file()


def test_compare_writes_table(trained_run: Path, tmp_path: Path) -> None:
    reports = []
    for name, tta in (("plain", "--no-tta"), ("tta", "--tta")):
        out = tmp_path / name
        result = runner.invoke(
            app,
            ["evaluate", "-m", str(trained_run), "-d", str(SAMPLE), "--split", "val", tta, "-o", str(out)],
        )
        assert result.exit_code == 0, result.output
        reports.append(str(out / "report.json"))
    result = runner.invoke(app, ["compare", *reports, "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "| model |" in result.stdout
    assert (tmp_path / "cmp" / "comparison.png").is_file()
