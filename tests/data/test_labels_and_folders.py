from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emonext.data.folders import UNSPLIT, scan_image_folders
from emonext.labels import FER2013_CLASSES, canonical_class


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Angry", "angry"),
        ("ANGER", "angry"),
        ("sadness", "sad"),
        ("Happiness", "happy"),
        ("surprised", "surprise"),
        ("3_happy", "happy"),
        ("fearful", "fear"),
        ("  Neutral ", "neutral"),
        ("cat", None),
    ],
)
def test_canonical_class(name: str, expected: str | None) -> None:
    assert canonical_class(name) == expected


def make_tree(root: Path, layout: dict[str, int]) -> None:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            Image.fromarray(np.full((48, 48), index * 10, dtype=np.uint8)).save(
                root / folder / f"{index}.png"
            )


def test_split_layout_uses_canonical_order_whatever_the_folder_names(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/Neutral": 2, "train/ANGER": 1, "train/happiness": 3, "Validation/sadness": 1})
    make_tree(tmp_path, {"train/dogs": 1, "notes": 1})
    scan = scan_image_folders(tmp_path, FER2013_CLASSES)
    labels = {(record.path.parent.name, record.split): record.label for record in scan.records}
    assert labels[("Neutral", "train")] == 6
    assert labels[("ANGER", "train")] == 0
    assert labels[("happiness", "train")] == 3
    assert labels[("sadness", "val")] == 4
    assert sorted(scan.unknown_folders) == ["notes", "train/dogs"]
    assert scan.splits == ["train", "val"]
    assert len(scan.records) == 7


def test_class_layout_has_a_single_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"happy": 2, "sad": 2})
    scan = scan_image_folders(tmp_path, FER2013_CLASSES)
    assert {record.split for record in scan.records} == {UNSPLIT}
    assert "angry" in scan.classes_without_images[UNSPLIT]


def test_configurable_class_list(tmp_path: Path) -> None:
    make_tree(tmp_path, {"happy": 1, "contempt": 2, "sad": 1})
    scan = scan_image_folders(tmp_path, ("contempt", "happy"))
    assert sorted(record.label for record in scan.records) == [0, 0, 1]
    assert scan.unknown_folders == ["sad"]


def test_no_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dogs").mkdir()
    with pytest.raises(ValueError, match="no images of the classes"):
        scan_image_folders(tmp_path, FER2013_CLASSES)
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        scan_image_folders(tmp_path / "missing", FER2013_CLASSES)
