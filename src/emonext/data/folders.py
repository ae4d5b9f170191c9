"""Discover labelled face images in image-folder layouts.

Two layouts are understood, with class folder names matched case-insensitively through
:data:`emonext.labels.CLASS_ALIASES`:

* split layout, as in the Kaggle conversion of FER2013: ``<root>/<split>/<class>/*.jpg`` with
  splits such as ``train``, ``val`` (``valid``, ``validation``) and ``test``;
* class layout: ``<root>/<class>/*.jpg`` (every image belongs to the single split ``all``).

Folders that name no known class are reported, never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emonext.labels import canonical_class

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm"})
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "publictest": "val",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}
#: Split name given to the images of a class layout (no split folders).
UNSPLIT = "all"


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file."""

    path: Path
    label: int
    split: str


@dataclass
class FolderScan:
    """What :func:`scan_image_folders` found.

    Attributes:
        records: Labelled image files, sorted by path.
        unknown_folders: Folders whose name is no known class (relative to the root).
        classes_without_images: Configured classes that had no folder or no image, per split.
    """

    records: list[ImageRecord] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    classes_without_images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return sorted({record.split for record in self.records})


def scan_image_folders(root: Path, classes: Sequence[str]) -> FolderScan:
    """List the labelled images under ``root``.

    Args:
        root: Root of a split layout or a class layout.
        classes: Class names in label order (canonical names).

    Returns:
        The records plus what was skipped and why.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        ValueError: No image of a configured class was found.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    class_index = {name: index for index, name in enumerate(classes)}
    subfolders = sorted(
        child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")
    )
    split_folders = {
        child: SPLIT_ALIASES[child.name.lower()]
        for child in subfolders
        if child.name.lower() in SPLIT_ALIASES
    }

    scan = FolderScan()
    if split_folders:
        for child in subfolders:
            if child not in split_folders:
                scan.unknown_folders.append(child.name)
        for folder, split in split_folders.items():
            _scan_class_folders(folder, split, root, class_index, scan)
    else:
        _scan_class_folders(root, UNSPLIT, root, class_index, scan)

    for folder in scan.unknown_folders:
        logger.warning("%s: folder %r is not a known class or split; its images are ignored", root, folder)
    if not scan.records:
        raise ValueError(
            f"{root}: no images of the classes {list(classes)} found "
            f"(expected <root>/<class>/ or <root>/<split>/<class>/ folders)"
        )
    scan.records.sort(key=lambda record: str(record.path))
    return scan


def _scan_class_folders(
    folder: Path, split: str, root: Path, class_index: dict[str, int], scan: FolderScan
) -> None:
    found: set[str] = set()
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        name = canonical_class(child.name) or child.name.lower()
        if name not in class_index:
            scan.unknown_folders.append(str(child.relative_to(root)))
            continue
        images = [
            path
            for path in child.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
        ]
        scan.records.extend(ImageRecord(path, class_index[name], split) for path in images)
        if images:
            found.add(name)
    missing = [name for name in class_index if name not in found]
    if missing:
        scan.classes_without_images[split] = missing
