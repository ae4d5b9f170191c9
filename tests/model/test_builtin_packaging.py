"""scripts/make_builtin_model.py: a trained checkpoint becomes a float16 or int8 built-in model with its card.

The packaged model must predict like its source, its card must report the evaluation it was given,
and a copy over the size limit must leave the existing built-in model untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from emonext.checkpoint import (
    INT8_SCALE_PREFIX,
    CheckpointError,
    WeightsDtype,
    model_from_checkpoint,
    read_checkpoint,
)
from emonext.data.dataset import load_folder
from emonext.evaluation.evaluate import evaluate_model, predict_probabilities
from emonext.registry import BUILTIN_WEIGHTS
from tests.conftest import REPO, SAMPLE

sys.path.insert(0, str(REPO / "scripts"))

import make_builtin_model


@pytest.fixture(scope="module")
def report(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output_dir = tmp_path_factory.mktemp("evaluate")
    evaluate_model(trained_run, SAMPLE, output_dir, split="val")
    return output_dir / "report.json"


def package(
    trained_run: Path,
    report: Path,
    out: Path,
    weights: WeightsDtype = WeightsDtype.float16,
) -> None:
    make_builtin_model.main(
        checkpoint=trained_run / "best.safetensors",
        report=report,
        data=SAMPLE,
        command="emonext train --set data.root=data/sample/fer2013",
        split="val",
        check_faces=64,
        out=out,
        weights=weights,
    )


def test_packaged_model_is_float16_predicts_like_the_source_and_has_its_card(
    trained_run: Path, report: Path, tmp_path: Path
) -> None:
    package(trained_run, report, tmp_path)
    packaged = read_checkpoint(tmp_path / BUILTIN_WEIGHTS)
    source = read_checkpoint(trained_run / "best.safetensors")
    assert {tensor.dtype for tensor in packaged.state_dict.values() if tensor.is_floating_point()} == {
        torch.float16
    }
    assert (tmp_path / BUILTIN_WEIGHTS).stat().st_size < (trained_run / "best.safetensors").stat().st_size
    faces, _ = load_folder(SAMPLE, source.data_config, "val")
    original = predict_probabilities(model_from_checkpoint(source), faces.images, source.model_config)
    copy = predict_probabilities(model_from_checkpoint(packaged), faces.images, packaged.model_config)
    assert (original.argmax(1) == copy.argmax(1)).mean() >= 0.99

    document = json.loads(report.read_text())
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert f"| accuracy | {document['accuracy']:.4f} |" in card
    assert "`emonext train --set data.root=data/sample/fer2013`" in card
    for name in document["classes"]:
        assert f"| {name} | {document['per_class'][name]['precision']:.3f} |" in card
    for name, row in zip(document["classes"], document["confusion_matrix"], strict=True):
        assert f"| {name} | " + " | ".join(str(value) for value in row) + " |" in card
    assert "staged" not in " ".join(path.name for path in tmp_path.iterdir())


def test_copy_over_the_size_limit_keeps_the_existing_model(
    trained_run: Path, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package(trained_run, report, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    monkeypatch.setattr(make_builtin_model, "MAX_BYTES", 1024)
    with pytest.raises(
        SystemExit, match=r"best\.safetensors: its float16 copy has \d+ bytes, over the 1024-byte limit"
    ):
        package(trained_run, report, tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_int8_copy_stores_int8_kernels_and_loads_back_within_half_a_step(
    trained_run: Path, report: Path, tmp_path: Path
) -> None:
    package(trained_run, report, tmp_path, WeightsDtype.int8)
    stored = load_file(tmp_path / BUILTIN_WEIGHTS)
    scales = {
        key.removeprefix(INT8_SCALE_PREFIX): value
        for key, value in stored.items()
        if key.startswith(INT8_SCALE_PREFIX)
    }
    assert scales and all(stored[key].dtype == torch.int8 for key in scales)
    source = read_checkpoint(trained_run / "best.safetensors")
    packaged = read_checkpoint(tmp_path / BUILTIN_WEIGHTS)
    assert packaged.state_dict.keys() == source.state_dict.keys()
    for key, scale in scales.items():
        restored, original = packaged.state_dict[key], source.state_dict[key]
        assert restored.dtype == torch.float32
        step = scale.reshape(-1, *([1] * (original.ndim - 1)))
        assert bool(((restored - original).abs() <= step / 2 + 1e-7).all()), key
    assert (tmp_path / BUILTIN_WEIGHTS).stat().st_size < 0.4 * (
        trained_run / "best.safetensors"
    ).stat().st_size
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "int8 per output channel" in card and "on 64 `val` faces" in card

    with safe_open(str(tmp_path / BUILTIN_WEIGHTS), framework="pt") as handle:
        header = handle.metadata()
    first = next(iter(scales))
    broken = {key: value for key, value in stored.items() if key != INT8_SCALE_PREFIX + first}
    save_file(broken, str(tmp_path / "broken.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: int8 weights without their scales"):
        read_checkpoint(tmp_path / "broken.safetensors")
