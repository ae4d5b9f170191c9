from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emonext.checkpoint import model_from_checkpoint, read_checkpoint
from emonext.data.dataset import load_splits
from emonext.evaluation.evaluate import evaluate_model, predict_probabilities
from tests.conftest import SAMPLE


def test_evaluate_writes_report_confusion_and_plot(trained_run: Path, tmp_path: Path) -> None:
    result = evaluate_model(trained_run, SAMPLE, tmp_path, split="val")
    report = json.loads(result.report_file.read_text())
    assert report["num_samples"] == 70
    assert np.array(report["confusion_matrix"]).sum() == 70
    rows = json.loads(result.confusion_file.read_text())
    assert len(rows) == 70 and set(rows[0]) == {"actual", "predicted"}
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert correct / 70 == pytest.approx(report["accuracy"])
    with Image.open(result.confusion_plot) as image:
        assert image.format == "PNG"


def test_tta_probabilities_are_distributions(trained_run: Path) -> None:
    checkpoint = read_checkpoint(trained_run)
    model = model_from_checkpoint(checkpoint)
    datasets, _ = load_splits(checkpoint.data_config, ["val"], seed=0)
    images = datasets["val"].images[:9]
    plain = predict_probabilities(model, images, checkpoint.model_config, batch_size=4)
    tta = predict_probabilities(model, images, checkpoint.model_config, batch_size=4, tta=True)
    assert plain.shape == tta.shape == (9, 7)
    np.testing.assert_allclose(tta.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(plain, tta)


def test_evaluate_needs_a_split_when_there_are_several(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has splits \['train', 'val'\]; choose one with --split"):
        evaluate_model(trained_run, SAMPLE, tmp_path)


def test_evaluate_rejects_other_class_lists(trained_run: Path, tmp_path: Path) -> None:
    from emonext.evaluation.evaluate import evaluate_dataset

    checkpoint = read_checkpoint(trained_run)
    data = checkpoint.data_config.model_copy(update={"classes": ("happy", "sad")})
    datasets, _ = load_splits(data, ["val"], seed=0)
    with pytest.raises(ValueError, match="differ from the model's classes"):
        evaluate_dataset(checkpoint, datasets["val"], tmp_path)
