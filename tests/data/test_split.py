"""The split: per-class ratios, determinism, stability, leakage-free groups, Usage, outputs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emonext.cleaning import clean
from emonext.cleaning.pipeline import MANIFEST_COLUMNS
from emonext.config import Params, load_params
from emonext.data.dataset import load_splits
from emonext.splitting import SPLITS, split
from tests.conftest import PARAMS_FILE, SAMPLE

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def split_params(tmp_path: Path, *overrides: str) -> Params:
    return load_params(PARAMS_FILE, [f"split.output_dir={tmp_path / 'split'}", *overrides])


def write_clean_dir(clean_dir: Path, rows: list[dict[str, str]]) -> None:
    """A clean output as ``emonext clean`` writes it: manifest plus one PNG per kept row.

    Every image is a hard link to one small face, so hundreds of rows cost nothing.
    """
    template = clean_dir / "template.png"
    if not template.exists():
        clean_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 48), 128, dtype=np.uint8)).save(template)
    for row in rows:
        target = clean_dir / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(template, target)
    with (clean_dir / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows({column: row.get(column, "") for column in MANIFEST_COLUMNS} for row in rows)


def make_rows(
    per_class: int, tag: str = "", usage: str = "", source: str = "scraped"
) -> list[dict[str, str]]:
    rows = []
    for label in CLASSES:
        for index in range(per_class):
            sha = hashlib.sha256(f"{tag}{label}{index}".encode()).hexdigest()
            rows.append(
                {
                    "path": f"images/{label}/{sha}.png",
                    "label": label,
                    "source": source,
                    "original": f"{label}/{index}.jpg",
                    "usage": usage,
                    "sha256": sha,
                    "fate": "kept",
                    "group": sha,
                }
            )
    return rows


def read_split(output_dir: Path) -> dict[str, dict[str, str]]:
    with (output_dir / "split.csv").open(newline="") as handle:
        return {row["sha256"]: row for row in csv.DictReader(handle)}


def test_ratios_hold_per_class(tmp_path: Path) -> None:
    write_clean_dir(tmp_path / "clean", make_rows(300))
    params = split_params(tmp_path)
    report = split(params.split, tmp_path / "clean", params.data)
    assert report.total == 300 * len(CLASSES)
    for label in CLASSES:
        shares = {name: report.counts[name][label] / 300 for name in SPLITS}
        assert abs(shares["train"] - 0.8) < 0.06, (label, shares)
        assert abs(shares["val"] - 0.1) < 0.05 and abs(shares["test"] - 0.1) < 0.05, (label, shares)


def test_custom_ratios_and_zero_share(tmp_path: Path) -> None:
    write_clean_dir(tmp_path / "clean", make_rows(200))
    params = split_params(tmp_path, "split.ratios={train: 0.7, val: 0.3, test: 0.0}")
    report = split(params.split, tmp_path / "clean", params.data)
    assert sum(report.counts["test"].values()) == 0
    assert abs(sum(report.counts["val"].values()) / report.total - 0.3) < 0.03
    assert not (tmp_path / "split" / "test").exists()


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    write_clean_dir(tmp_path / "clean", make_rows(60))
    params = split_params(tmp_path)
    split(params.split, tmp_path / "clean", params.data)
    first = (tmp_path / "split" / "split.csv").read_bytes()
    split(params.split, tmp_path / "clean", params.data)
    assert (tmp_path / "split" / "split.csv").read_bytes() == first
    reseeded = split_params(tmp_path, "split.seed=14")
    split(reseeded.split, tmp_path / "clean", reseeded.data)
    assert (tmp_path / "split" / "split.csv").read_bytes() != first


def test_adding_images_never_moves_existing_ones(tmp_path: Path) -> None:
    old_rows = make_rows(80)
    write_clean_dir(tmp_path / "clean", old_rows)
    params = split_params(tmp_path)
    split(params.split, tmp_path / "clean", params.data)
    before = {sha: row["split"] for sha, row in read_split(tmp_path / "split").items()}
    new_rows = make_rows(120, tag="new")
    write_clean_dir(tmp_path / "clean", new_rows[:200] + old_rows + new_rows[200:])
    split(params.split, tmp_path / "clean", params.data)
    after = {sha: row["split"] for sha, row in read_split(tmp_path / "split").items()}
    assert len(after) == len(before) + len(new_rows)
    assert {sha: after[sha] for sha in before} == before


def test_near_duplicate_groups_stay_in_one_split(tmp_path: Path) -> None:
    rows = make_rows(40)
    for index, row in enumerate(rows):
        row["group"] = rows[index - index % 5]["sha256"]  # groups of five, some across classes
    write_clean_dir(tmp_path / "clean", rows)
    params = split_params(tmp_path)
    report = split(params.split, tmp_path / "clean", params.data)
    assert report.groups == len(rows) // 5
    splits_of_group: dict[str, set[str]] = {}
    for row in read_split(tmp_path / "split").values():
        splits_of_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(names) == 1 for names in splits_of_group.values())
    assert {name for names in splits_of_group.values() for name in names} == set(SPLITS)


def test_honour_usage_keeps_fer_rows_and_groups_whole(tmp_path: Path) -> None:
    fer = make_rows(30, tag="fer", usage="train", source="fer2013")
    for row in fer[::3]:
        row["usage"] = "val"
    scraped = make_rows(30, tag="web")
    scraped[0]["group"] = fer[1]["sha256"]  # a scraped near copy of a FER2013 val face
    fer[1]["usage"] = "val"
    write_clean_dir(tmp_path / "clean", fer + scraped)
    params = split_params(tmp_path, "split.honour_usage=true")
    report = split(params.split, tmp_path / "clean", params.data)
    result = read_split(tmp_path / "split")
    assert all(result[row["sha256"]]["split"] == row["usage"] for row in fer)
    assert result[scraped[0]["sha256"]]["split"] == "val"
    assert report.by_usage == len(fer) and report.usage_overridden == 0
    web_splits = Counter(result[row["sha256"]]["split"] for row in scraped)
    assert set(web_splits) == set(SPLITS)

    plain = split_params(tmp_path, "split.honour_usage=false")
    split(plain.split, tmp_path / "clean", plain.data)
    moved = read_split(tmp_path / "split")
    assert any(moved[row["sha256"]]["split"] != row["usage"] for row in fer)


def test_tree_counts_and_loaders_agree(tmp_path: Path) -> None:
    """End to end: clean the FER2013 sample, split it, load the split with the training loaders."""
    params = load_params(
        PARAMS_FILE,
        [
            f"clean.sources=[{{name: fer2013, path: '{SAMPLE}', pre_cropped: true}}]",
            f"clean.output_dir={tmp_path / 'clean'}",
            "clean.workers=1",
            f"split.output_dir={tmp_path / 'split'}",
            f"data.root={tmp_path / 'split'}",
        ],
    )
    cleaned = clean(params.clean, params.data, progress=False)
    report = split(params.split, tmp_path / "clean", params.data)
    assert report.total == cleaned.kept and report.hard_links

    counts = json.loads((tmp_path / "split" / "counts.json").read_text())
    for name in SPLITS:
        for label in CLASSES:
            on_disk = len(list((tmp_path / "split" / name / label).glob("*.png")))
            assert counts[name][label] == on_disk == report.counts[name][label]
        assert counts[name]["total"] == sum(report.counts[name].values())
    assert counts["total"]["total"] == report.total

    rows = read_split(tmp_path / "split")
    assert all(
        (tmp_path / "split" / row["path"]).samefile(tmp_path / "clean" / f"images/{row['label']}/{sha}.png")
        for sha, row in rows.items()
    )
    datasets, _ = load_splits(params.data, ["train", "val", "test"], seed=0)
    assert {name: len(datasets[name]) for name in SPLITS} == {
        name: sum(report.counts[name].values()) for name in SPLITS
    }


def test_rerun_removes_stale_files_and_skips_bad_rows(tmp_path: Path) -> None:
    rows = make_rows(20)
    rows[0]["label"] = "contempt"
    rows[1]["fate"] = "dropped"
    write_clean_dir(tmp_path / "clean", rows)
    (tmp_path / "clean" / rows[2]["path"]).unlink()
    params = split_params(tmp_path)
    report = split(params.split, tmp_path / "clean", params.data)
    assert report.skipped == {"unknown_class": 1, "missing_file": 1}
    assert report.total == len(rows) - 3
    write_clean_dir(tmp_path / "clean", rows[3:10])
    split(params.split, tmp_path / "clean", params.data)
    files = {str(path.relative_to(tmp_path / "split")) for path in (tmp_path / "split").rglob("*.png")}
    assert files == {row["path"] for row in read_split(tmp_path / "split").values()}
    assert len(files) == 7

    with pytest.raises(FileNotFoundError, match="emonext clean"):
        split(params.split, tmp_path / "nothing", params.data)
