"""In-memory face datasets.

FER2013 faces are tiny (48x48 grayscale): decoding them once into a uint8 tensor (35k faces take
80 MB) and augmenting whole batches with tensor ops keeps two CPU cores busy with the model
rather than with JPEG decoding every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from emonext.config import DataConfig
from emonext.data.fer_csv import MalformedRow, read_fer2013_csv
from emonext.data.folders import UNSPLIT, ImageRecord, scan_image_folders

logger = logging.getLogger(__name__)


@dataclass
class FaceDataset:
    """Decoded grayscale faces and their labels.

    Attributes:
        images: uint8 tensor (N, 1, H, W).
        labels: int64 tensor (N,) of indices into ``classes``.
        classes: Class names in label order.
        sources: Where each face came from (file path, or ``file.csv:line``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    sources: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be a uint8 tensor (N, 1, H, W), got {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images) or len(self.sources) != len(self.images):
            raise ValueError("images, labels and sources must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> FaceDataset:
        index = torch.as_tensor(indices, dtype=torch.long)
        return FaceDataset(
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
            sources=[self.sources[i] for i in index.tolist()],
        )

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))


@dataclass
class LoadReport:
    """What a load skipped, so nothing is dropped silently."""

    unreadable: list[tuple[str, str]] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    malformed_rows: list[MalformedRow] = field(default_factory=list)


def load_splits(
    config: DataConfig, splits: Sequence[str], seed: int
) -> tuple[dict[str, FaceDataset], LoadReport]:
    """Load the requested splits of ``config.root`` into memory.

    When the data has no ``config.val_split`` but it is requested, a stratified
    ``config.val_fraction`` of the training split is held out for it (deterministic under ``seed``).
    A class layout (no split folders) serves as the training split.

    Args:
        config: Data configuration.
        splits: Split names, e.g. ``[config.train_split, config.val_split]``.
        seed: Seed of the hold-out.

    Returns:
        The datasets by split name, and what was skipped.

    Raises:
        FileNotFoundError: ``config.root`` does not exist.
        ValueError: A requested split does not exist and cannot be derived.
    """
    report = LoadReport()
    available = _load_all(config, report)
    if UNSPLIT in available and config.train_split not in available:
        available[config.train_split] = available.pop(UNSPLIT)

    wanted_val = config.val_split in splits and config.val_split not in available
    if wanted_val and config.train_split in available and config.val_fraction > 0:
        train, val = stratified_holdout(available[config.train_split], config.val_fraction, seed)
        available[config.train_split], available[config.val_split] = train, val
        logger.info(
            "%s: no %r split; held out %d of %d training faces (stratified) for it",
            config.root,
            config.val_split,
            len(val),
            len(train) + len(val),
        )

    missing = [split for split in splits if split not in available]
    if missing:
        raise ValueError(f"{config.root}: split(s) {missing} not found; available: {sorted(available)}")
    return {split: available[split] for split in splits}, report


def load_folder(root: Path, config: DataConfig, split: str | None = None) -> tuple[FaceDataset, LoadReport]:
    """Load one folder of labelled faces for scoring: ``split`` of a split layout, or all images.

    Args:
        root: A class layout or split layout folder, or a FER2013 CSV.
        config: Data configuration (classes, image size); its ``root`` is ignored.
        split: Split to use when ``root`` has split folders; None requires a class layout or a
            single split.
    """
    report = LoadReport()
    available = _load_all(config.model_copy(update={"root": root, "format": "auto"}), report, only=split)
    if split is not None and split in available:
        return available[split], report
    if len(available) == 1:
        return next(iter(available.values())), report
    raise ValueError(f"{root}: has splits {sorted(available)}; choose one with --split")


def stratified_holdout(dataset: FaceDataset, fraction: float, seed: int) -> tuple[FaceDataset, FaceDataset]:
    """Split ``dataset`` into (rest, held-out) with ``fraction`` of every class held out."""
    generator = np.random.default_rng(seed)
    held_out: list[int] = []
    labels = dataset.labels.numpy()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # At least one face per class is held out, and at least one stays for training.
        count = min(max(round(len(members) * fraction), 1), len(members) - 1) if len(members) >= 2 else 0
        held_out.extend(generator.permutation(members)[:count].tolist())
    held = sorted(held_out)
    rest = sorted(set(range(len(dataset))) - set(held))
    return dataset.subset(rest), dataset.subset(held)


def _load_all(config: DataConfig, report: LoadReport, only: str | None = None) -> dict[str, FaceDataset]:
    root = config.root
    is_csv = config.format == "csv" or (config.format == "auto" and root.is_file())
    if is_csv:
        return _load_csv(config, report)
    if config.format == "folder" or root.is_dir():
        return _load_folders(config, report, only)
    raise FileNotFoundError(f"{root}: data not found (expected a folder of class folders or a fer2013.csv)")


def _load_csv(config: DataConfig, report: LoadReport) -> dict[str, FaceDataset]:
    table = read_fer2013_csv(config.root, config.classes)
    report.malformed_rows.extend(table.malformed)
    images = torch.from_numpy(table.images).unsqueeze(1)
    if config.image_size != images.shape[-1]:
        images = _resize_uint8(images, config.image_size)
    dataset = FaceDataset(
        images=images,
        labels=torch.from_numpy(table.labels),
        classes=config.classes,
        sources=[f"{config.root}:{line}" for line in table.lines],
    )
    splits = np.array(table.splits)
    result = {}
    for split in sorted(set(table.splits)):
        result[split] = _cap_per_class(dataset.subset(np.flatnonzero(splits == split).tolist()), config)
    return result


def _load_folders(config: DataConfig, report: LoadReport, only: str | None = None) -> dict[str, FaceDataset]:
    """Decode every split, or only ``only`` when the folder has it (scoring one split of three)."""
    scan = scan_image_folders(config.root, config.classes)
    report.unknown_folders.extend(scan.unknown_folders)
    for split, classes in scan.classes_without_images.items():
        logger.warning("%s: split %r has no images of %s", config.root, split, classes)
    by_split: dict[str, list[ImageRecord]] = {}
    for record in scan.records:
        by_split.setdefault(record.split, []).append(record)
    if only in by_split:
        by_split = {only: by_split[only]}
    result = {}
    for split, records in sorted(by_split.items()):
        records = _cap_records(records, config.max_per_class)
        result[split] = _decode_records(records, config, report, description=f"decode {split}")
    return result


def _cap_records(records: list[ImageRecord], max_per_class: int | None) -> list[ImageRecord]:
    if max_per_class is None:
        return records
    taken: dict[int, int] = {}
    capped = []
    for record in records:
        if taken.get(record.label, 0) < max_per_class:
            taken[record.label] = taken.get(record.label, 0) + 1
            capped.append(record)
    return capped


def _cap_per_class(dataset: FaceDataset, config: DataConfig) -> FaceDataset:
    if config.max_per_class is None:
        return dataset
    keep: list[int] = []
    for label in range(len(config.classes)):
        keep.extend(torch.nonzero(dataset.labels == label).flatten()[: config.max_per_class].tolist())
    return dataset.subset(sorted(keep))


def decode_face(path: Path, size: int) -> np.ndarray:
    """Decode an image file to a ``size`` x ``size`` grayscale uint8 array.

    Raises:
        ValueError: The file is not a readable image; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def _decode_records(
    records: list[ImageRecord], config: DataConfig, report: LoadReport, description: str
) -> FaceDataset:
    def decode(record: ImageRecord) -> np.ndarray | str:
        try:
            return decode_face(record.path, config.image_size)
        except ValueError as error:
            return str(error)

    arrays: list[np.ndarray] = []
    kept: list[ImageRecord] = []
    # PIL releases the GIL while decoding, so threads use both cores without pickling arrays.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results: Iterator[np.ndarray | str] = pool.map(decode, records)
        # disable=None: a bar on a terminal, none in logs (CI, Prefect runs, DVC stages).
        pairs = zip(records, results, strict=True)
        for record, result in tqdm(
            pairs, total=len(records), desc=description, unit="img", leave=False, disable=None
        ):
            if isinstance(result, str):
                report.unreadable.append((str(record.path), result))
                logger.warning("skipped %s", result)
                continue
            arrays.append(result)
            kept.append(record)
    if not arrays:
        raise ValueError(f"{config.root}: none of the {len(records)} images could be decoded")
    return FaceDataset(
        images=torch.from_numpy(np.stack(arrays)).unsqueeze(1),
        labels=torch.tensor([record.label for record in kept], dtype=torch.long),
        classes=config.classes,
        sources=[str(record.path) for record in kept],
    )


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)
