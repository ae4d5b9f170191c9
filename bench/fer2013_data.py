"""Helpers shared by the benchmarks (no torch import: the clean benchmark measures memory)."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

logger = logging.getLogger("bench")

#: The shared FER2013 image-folder tarball (train + PublicTest-as-val).
SHARED_FER2013 = Path("../shared/data/fer2013-train-val.tar.gz")


def fer2013_root(data: Path, cache: Path) -> Path:
    """The image-folder root inside ``data`` (a folder, or the shared tarball unpacked once)."""
    if data.is_dir():
        return data / "fer2013" if (data / "fer2013").is_dir() else data
    target = cache / "fer2013"
    if not target.is_dir():
        logger.info("unpacking %s into %s", data, cache)
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as archive:
            archive.extractall(cache, filter="data")
    return target
