from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emonext.config import load_params
from emonext.data.dataset import load_splits
from emonext.data.fer_csv import read_fer2013_csv
from tests.conftest import PARAMS_FILE

GOOD = " ".join(["128"] * 2304)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def test_malformed_rows_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    gradient = " ".join(str(value % 256) for value in range(2304))
    path = write_csv(
        tmp_path / "fer2013.csv",
        [
            f"3,{gradient},Training",  # line 2: good, happy
            f"x,{GOOD},Training",  # line 3: emotion not an integer
            f"9,{GOOD},Training",  # line 4: code out of range
            f"0,{' '.join(['1'] * 100)},Training",  # line 5: too few pixels
            f"0,{GOOD},Elsewhere",  # line 6: unknown usage
            f"6,{GOOD}",  # line 7: missing field
            f"4,{GOOD.replace('128', '300', 1)},PublicTest",  # line 8: pixel out of range
            f"6,{GOOD},PublicTest",  # line 9: good, neutral
            f"2,{GOOD},PrivateTest",  # line 10: good, fear
        ],
    )
    table = read_fer2013_csv(path)
    assert [(row.line, row.reason.split()[0]) for row in table.malformed] == [
        (3, "emotion"),
        (4, "emotion"),
        (5, "100"),
        (6, "unknown"),
        (7, "expected"),
        (8, "pixel"),
    ]
    assert table.lines == [2, 9, 10]
    assert table.labels.tolist() == [3, 6, 2]
    assert table.splits == ["train", "val", "test"]
    assert table.images.shape == (3, 48, 48) and table.images.dtype == np.uint8
    assert table.images[0, 0, :3].tolist() == [0, 1, 2]


def test_class_subset_skips_other_emotions(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", [f"3,{GOOD},Training", f"0,{GOOD},Training"])
    table = read_fer2013_csv(path, classes=("happy", "sad"))
    assert table.labels.tolist() == [0]
    assert "not in the configured classes" in table.malformed[0].reason


def test_header_and_empty_file_errors(tmp_path: Path) -> None:
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("label,data\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_fer2013_csv(bad_header)
    only_bad = write_csv(tmp_path / "only_bad.csv", ["x,1,Training"])
    with pytest.raises(ValueError, match="no valid rows"):
        read_fer2013_csv(only_bad)
    with pytest.raises(FileNotFoundError, match="FER2013 CSV not found"):
        read_fer2013_csv(tmp_path / "missing.csv")


def test_csv_loads_as_splits(tmp_path: Path) -> None:
    rows = [f"{code},{GOOD},Training" for code in range(7) for _ in range(3)]
    rows += [f"{code},{GOOD},PublicTest" for code in range(7)]
    path = write_csv(tmp_path / "fer2013.csv", rows)
    params = load_params(PARAMS_FILE, [f"data.root={path}", "data.image_size=32"])
    datasets, report = load_splits(params.data, ["train", "val"], seed=0)
    assert len(datasets["train"]) == 21 and len(datasets["val"]) == 7
    assert datasets["train"].images.shape[1:] == (1, 32, 32)
    assert datasets["val"].sources[0] == f"{path}:23"
    assert not report.malformed_rows
