"""Rebuild the bundled FER2013 sample (data/sample/fer2013) from the full image-folder data set.

Takes, per class, the first TRAIN + VAL images of FER2013's training split in a seeded random
order, skipping near-blank faces and exact pixel duplicates, and copies them unchanged into
``train/<class>/`` and ``val/<class>/``.

    python scripts/make_sample.py /path/to/fer2013 data/sample/fer2013
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger("make_sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="FER2013 image-folder root (with train/<class>/)")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--train", type=int, default=40, help="training images per class")
    parser.add_argument("--val", type=int, default=10, help="validation images per class")
    parser.add_argument("--seed", type=int, default=2013)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.destination.exists():
        shutil.rmtree(args.destination)
    seen: set[str] = set()
    for class_dir in sorted((args.source / "train").iterdir()):
        files = sorted(class_dir.glob("*.jpg"))
        random.Random(f"{args.seed}-{class_dir.name}").shuffle(files)
        chosen: list[Path] = []
        for path in files:
            pixels = np.asarray(Image.open(path).convert("L"))
            digest = hashlib.sha256(pixels.tobytes()).hexdigest()
            if pixels.std() < 10 or digest in seen:  # near-blank or duplicate face
                continue
            seen.add(digest)
            chosen.append(path)
            if len(chosen) == args.train + args.val:
                break
        for index, path in enumerate(chosen):
            split = "train" if index < args.train else "val"
            target = args.destination / split / class_dir.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        logger.info("%s: %d train, %d val", class_dir.name, args.train, len(chosen) - args.train)


if __name__ == "__main__":
    main()
