"""Read FER2013 from Kaggle's ``fer2013.csv`` (columns ``emotion,pixels,Usage``).

Malformed rows are reported with their line numbers and skipped: a bad row never crashes the
load and is never dropped silently.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emonext.labels import FER2013_CLASSES

logger = logging.getLogger(__name__)

FER2013_SIDE = 48
USAGE_TO_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
REQUIRED_COLUMNS = ("emotion", "pixels")


@dataclass(frozen=True)
class MalformedRow:
    """A CSV row that was skipped, with the 1-based line number in the file."""

    line: int
    reason: str


@dataclass
class Fer2013Csv:
    """Decoded rows of a FER2013 CSV.

    Attributes:
        images: uint8 array (N, 48, 48).
        labels: int64 array (N,) of indices into the requested class list.
        splits: Split of each row (``train``, ``val``, ``test``; ``all`` without a Usage column).
        lines: 1-based line number of each row, to name it in reports.
        malformed: Skipped rows and why.
    """

    images: np.ndarray
    labels: np.ndarray
    splits: list[str]
    lines: list[int]
    malformed: list[MalformedRow] = field(default_factory=list)


def read_fer2013_csv(path: Path, classes: Sequence[str] = FER2013_CLASSES) -> Fer2013Csv:
    """Parse ``fer2013.csv``.

    The ``emotion`` column holds FER2013's canonical codes (0 angry ... 6 neutral); rows whose
    emotion is not in ``classes`` are skipped and reported like malformed rows.

    Args:
        path: The CSV file.
        classes: Class names in label order.

    Returns:
        The decoded images, labels and splits.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The header lacks the required columns, or no row could be read.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FER2013 CSV not found")
    class_index = {name: index for index, name in enumerate(classes)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    splits: list[str] = []
    lines: list[int] = []
    malformed: list[MalformedRow] = []
    expected_pixels = FER2013_SIDE * FER2013_SIDE

    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [column.strip().lower() for column in next(reader, [])]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise ValueError(
                f"{path}: header {header} lacks column(s) {missing}; expected emotion,pixels,Usage"
            )
        emotion_at, pixels_at = header.index("emotion"), header.index("pixels")
        usage_at = header.index("usage") if "usage" in header else None

        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                malformed.append(MalformedRow(line, f"expected {len(header)} fields, got {len(row)}"))
                continue
            try:
                code = int(row[emotion_at])
            except ValueError:
                malformed.append(MalformedRow(line, f"emotion {row[emotion_at]!r} is not an integer"))
                continue
            if not 0 <= code < len(FER2013_CLASSES):
                malformed.append(MalformedRow(line, f"emotion code {code} is outside 0-6"))
                continue
            name = FER2013_CLASSES[code]
            if name not in class_index:
                malformed.append(MalformedRow(line, f"emotion {name!r} is not in the configured classes"))
                continue
            try:
                pixels = np.array(row[pixels_at].split(), dtype=np.int64)
            except ValueError:
                malformed.append(MalformedRow(line, "pixels are not space-separated integers"))
                continue
            if pixels.size != expected_pixels:
                malformed.append(MalformedRow(line, f"{pixels.size} pixels, expected {expected_pixels}"))
                continue
            if pixels.min() < 0 or pixels.max() > 255:
                malformed.append(MalformedRow(line, "pixel values outside 0-255"))
                continue
            split = "all"
            if usage_at is not None:
                usage = row[usage_at].strip().lower()
                if usage not in USAGE_TO_SPLIT:
                    malformed.append(MalformedRow(line, f"unknown Usage {row[usage_at]!r}"))
                    continue
                split = USAGE_TO_SPLIT[usage]
            images.append(pixels.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE))
            labels.append(class_index[name])
            splits.append(split)
            lines.append(line)

    for row in malformed[:20]:
        logger.warning("%s:%d: skipped row: %s", path, row.line, row.reason)
    if len(malformed) > 20:
        logger.warning("%s: %d more malformed rows skipped", path, len(malformed) - 20)
    if not images:
        raise ValueError(f"{path}: no valid rows ({len(malformed)} malformed)")
    return Fer2013Csv(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int64),
        splits=splits,
        lines=lines,
        malformed=malformed,
    )
