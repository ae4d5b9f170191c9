"""Stratified, leakage-free and stable train/val/test split of the cleaned faces.

Every near-duplicate group of the clean manifest (its ``group`` column: near-same faces and the
faces cut from one photo) goes to one split, so no face has a near copy on the other side. The
split of a group is a function of its content hash only: ``sha256(seed:group)`` is read as a
number in [0, 1) and compared with the cumulative ratios (train, then val, then test). Hence

* **stable**: adding or removing other images never moves an existing one (DVC-versioned splits
  do not churn); only a changed ``seed`` or ``ratios`` reshuffles;
* **stratified** in expectation: the draw is independent of the class, so every class is split by
  the ratios up to sampling noise (about ``sqrt(p (1 - p) / n)``: +/-1.3 points for the train
  share of a class with 1,000 images). Exact per-class quotas would have to move images whenever
  images are added, which is what stability rules out.

With ``honour_usage`` rows that carry a usage (FER2013's ``Usage``, or a source's split folder)
stay in it; a group follows the usage of its first such row, so a group is never split even when
its rows disagree (those rows are counted as ``usage_overridden``). Rows without usage are split
by the ratios.

The output is an image-folder tree ``<split>/<class>/<sha256>.png`` (hard links to the clean
images where the file system allows, copies otherwise) that ``data.root`` can point at, plus
``split.csv`` and ``counts.json``; it replaces a previous split as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emonext.cleaning.pipeline import KEPT, MANIFEST_FILE
from emonext.config import DataConfig, SplitConfig
from emonext.fileio import staged_directory, write_atomically, write_json

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FILE = "split.csv"
COUNTS_FILE = "counts.json"
SPLIT_COLUMNS: tuple[str, ...] = ("path", "label", "split", "group", "source", "original", "usage", "sha256")
REQUIRED_MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "fate", "sha256")


@dataclass
class SplitReport:
    """What the split wrote.

    Attributes:
        output_dir: The split folder.
        counts: Images per split and class.
        groups: Near-duplicate groups (each wholly in one split).
        by_usage: Rows placed by their usage (``honour_usage``).
        usage_overridden: Rows sent to another split than their usage to keep their group whole.
        skipped: Kept manifest rows left out, per reason (``unknown_class``, ``missing_file``).
        hard_links: True when every image is a hard link to the clean image, False when some
            had to be copied.
        seconds: Wall-clock duration.
    """

    output_dir: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    groups: int = 0
    by_usage: int = 0
    usage_overridden: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    hard_links: bool = True
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "total": self.total,
            "counts": self.counts,
            "groups": self.groups,
            "by_usage": self.by_usage,
            "usage_overridden": self.usage_overridden,
            "skipped": self.skipped,
            "hard_links": self.hard_links,
            "seconds": round(self.seconds, 3),
        }


def split(config: SplitConfig, clean_dir: Path, data: DataConfig) -> SplitReport:
    """Split the kept faces of a clean run into ``config.output_dir``.

    Args:
        config: The ``split`` section (ratios, seed, usage, output folder).
        clean_dir: Output folder of ``emonext clean`` (holding ``manifest.csv`` and ``images/``).
        data: The ``data`` section (class names).

    Returns:
        Per-split class counts and what was skipped.

    Raises:
        FileNotFoundError: ``clean_dir`` has no manifest.
        ValueError: The manifest lacks required columns or has no kept face of the configured
            classes, or the output folder holds something else than a previous split.
    """
    started = time.perf_counter()
    rows, skipped = read_kept_rows(clean_dir, data.classes)
    if not rows:
        raise ValueError(f"{clean_dir / MANIFEST_FILE}: no kept faces of the classes {list(data.classes)}")
    report = SplitReport(output_dir=config.output_dir, skipped=dict(skipped))

    assignment, report.groups, report.by_usage, report.usage_overridden = assign_splits(rows, config)
    counts = {name: Counter[str]() for name in SPLITS}
    for row, name in zip(rows, assignment, strict=True):
        counts[name][row["label"]] += 1
    report.counts = {name: {label: counts[name][label] for label in data.classes} for name in SPLITS}

    with staged_directory(config.output_dir, marker=SPLIT_FILE) as staging:
        for name in SPLITS:
            if sum(counts[name].values()) or config.ratios[name] > 0:
                for label in data.classes:
                    (staging / name / label).mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SPLIT_COLUMNS)
        for row, name in zip(rows, assignment, strict=True):
            relative = f"{name}/{row['label']}/{Path(row['path']).name}"
            report.hard_links &= _link_or_copy(clean_dir / row["path"], staging / relative)
            writer.writerow(
                (
                    relative,
                    row["label"],
                    name,
                    row["group"],
                    row.get("source", ""),
                    row.get("original", ""),
                    row.get("usage", ""),
                    row["sha256"],
                )
            )
        write_atomically(staging / SPLIT_FILE, buffer.getvalue())
        totals = {name: sum(report.counts[name].values()) for name in SPLITS}
        write_json(
            staging / COUNTS_FILE,
            {
                **{name: {**report.counts[name], "total": totals[name]} for name in SPLITS},
                "total": {
                    **{label: sum(report.counts[name][label] for name in SPLITS) for label in data.classes},
                    "total": report.total,
                },
            },
        )
    report.seconds = time.perf_counter() - started
    logger.info(
        "split: %s into %s (%d groups, %.1f s)",
        ", ".join(f"{name} {totals[name]}" for name in SPLITS),
        config.output_dir,
        report.groups,
        report.seconds,
    )
    return report


def read_kept_rows(clean_dir: Path, classes: Sequence[str]) -> tuple[list[dict[str, str]], Counter[str]]:
    """The kept rows of a clean manifest whose class is configured and whose image exists.

    Rows without a ``group`` are their own group (their content hash).

    Args:
        clean_dir: Output folder of ``emonext clean``.
        classes: Configured class names.

    Returns:
        The rows in manifest order, and the number of kept rows left out per reason.

    Raises:
        FileNotFoundError: There is no manifest.
        ValueError: The manifest lacks a required column.
    """
    manifest = clean_dir / MANIFEST_FILE
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: clean manifest not found; run `emonext clean` first")
    wanted = set(classes)
    rows: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_MANIFEST_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: lacks column(s) {missing}")
        for row in reader:
            if row["fate"] != KEPT:
                continue
            if row["label"] not in wanted:
                skipped["unknown_class"] += 1
                continue
            if not (clean_dir / row["path"]).is_file():
                skipped["missing_file"] += 1
                continue
            row["group"] = row.get("group") or row["sha256"]
            rows.append(row)
    for reason, count in skipped.items():
        logger.warning("split: left out %d kept row(s) of %s: %s", count, manifest, reason)
    return rows, skipped


def assign_splits(rows: list[dict[str, str]], config: SplitConfig) -> tuple[list[str], int, int, int]:
    """Choose the split of every row, group by group.

    Args:
        rows: Manifest rows with ``group`` (and optionally ``usage``), in priority order.
        config: Ratios, seed and ``honour_usage``.

    Returns:
        The split per row, the number of groups, the rows placed by usage and the rows whose
        usage was overridden to keep their group whole.
    """
    group_split: dict[str, str] = {}
    if config.honour_usage:
        for row in rows:
            usage = row.get("usage", "")
            if usage in SPLITS and row["group"] not in group_split:
                group_split[row["group"]] = usage
    by_usage = overridden = 0
    assignment: list[str] = []
    for row in rows:
        group = row["group"]
        if group not in group_split:
            group_split[group] = split_of(group, config.ratios, config.seed)
        assignment.append(group_split[group])
        usage = row.get("usage", "")
        if config.honour_usage and usage in SPLITS:
            by_usage += usage == group_split[group]
            overridden += usage != group_split[group]
    return assignment, len(group_split), by_usage, overridden


def split_of(key: str, ratios: dict[str, float], seed: int) -> str:
    """The split of a content hash: a uniform draw from ``sha256(seed:key)`` against the ratios.

    Args:
        key: Content hash (or group id).
        ratios: Fractions of ``train``, ``val`` and ``test``.
        seed: Salt; another seed gives another, equally stable, split.

    Returns:
        ``train``, ``val`` or ``test``.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name in SPLITS:
        cumulative += ratios[name]
        if draw < cumulative:
            return name
    # Ratios summing to 1 up to rounding: the last split with a share takes the remainder.
    return next(name for name in reversed(SPLITS) if ratios[name] > 0)


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link ``source`` to ``target``, copying where links are impossible; True if linked."""
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False
