from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emonext.config import load_params
from emonext.data.dataset import decode_face, load_folder, load_splits, stratified_holdout
from tests.conftest import PARAMS_FILE, SAMPLE, sample_params


def test_bundled_sample_loads_into_uint8_memory() -> None:
    params = sample_params()
    datasets, report = load_splits(params.data, ["train", "val"], seed=0)
    train, val = datasets["train"], datasets["val"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (280, 1, 48, 48)
    assert train.class_counts().tolist() == [40] * 7
    assert val.class_counts().tolist() == [10] * 7
    # Labels follow FER2013's order, not the alphabetical folder order (neutral is 6, sad is 4).
    neutral = [
        label
        for label, source in zip(train.labels.tolist(), train.sources, strict=True)
        if "/neutral/" in source
    ]
    assert set(neutral) == {6}
    assert not report.unreadable and not report.unknown_folders
    assert not set(train.sources) & set(val.sources)


def test_corrupt_images_are_reported_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    shutil.copytree(SAMPLE / "val", root)
    (root / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "sad" / "empty.png").write_bytes(b"")
    params = sample_params()
    dataset, report = load_folder(root, params.data)
    assert len(dataset) == 70
    assert sorted(Path(path).name for path, _ in report.unreadable) == ["broken.jpg", "empty.png"]
    assert all("not a readable image" in reason for _, reason in report.unreadable)


def test_non_square_colour_images_are_decoded_to_gray_squares(tmp_path: Path) -> None:
    path = tmp_path / "face.png"
    Image.fromarray(np.zeros((30, 50, 4), dtype=np.uint8) + 200, mode="RGBA").save(path)
    face = decode_face(path, 48)
    assert face.shape == (48, 48) and face.dtype == np.uint8


def test_missing_val_split_is_held_out_stratified_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    shutil.copytree(SAMPLE / "train", root)  # class layout, no split folders
    params = load_params(PARAMS_FILE, [f"data.root={root}", "data.val_fraction=0.25"])
    first, _ = load_splits(params.data, ["train", "val"], seed=3)
    second, _ = load_splits(params.data, ["train", "val"], seed=3)
    assert first["val"].class_counts().tolist() == [10] * 7
    assert first["train"].class_counts().tolist() == [30] * 7
    assert first["val"].sources == second["val"].sources
    assert not set(first["train"].sources) & set(first["val"].sources)
    other, _ = load_splits(params.data, ["train", "val"], seed=4)
    assert other["val"].sources != first["val"].sources


def test_holdout_keeps_singleton_classes_in_training() -> None:
    params = sample_params()
    datasets, _ = load_splits(params.data, ["val"], seed=0)
    single = datasets["val"].subset([0, 10, 11])  # one angry, two disgust
    rest, held = stratified_holdout(single, 0.5, seed=0)
    assert rest.labels.tolist().count(0) == 1 and held.labels.tolist() == [1]


def test_max_per_class_and_missing_split() -> None:
    params = sample_params("data.max_per_class=3")
    datasets, _ = load_splits(params.data, ["train"], seed=0)
    assert datasets["train"].class_counts().tolist() == [3] * 7
    with pytest.raises(ValueError, match=r"split\(s\) \['test'\] not found"):
        load_splits(params.data, ["test"], seed=0)
