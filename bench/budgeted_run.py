"""Budgeted run: train the default config on full FER2013 for a fixed wall-clock budget.

The number of epochs is chosen so the cosine schedule ends inside the budget: a short timed probe
of training steps estimates an epoch's duration, and ``train.max_minutes`` stops the run
regardless. Validation is FER2013's PublicTest split (``val/`` in the image-folder tarball).

    python bench/budgeted_run.py --data ../shared/data/fer2013-train-val.tar.gz --minutes 30
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tarfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from emonext.config import load_params
from emonext.data.dataset import load_splits
from emonext.data.transforms import train_transform
from emonext.fileio import write_json
from emonext.models import attention_regularization, create_model
from emonext.runtime import autocast, resolve_precision
from emonext.training import train

logger = logging.getLogger("bench.budgeted_run")


def fer2013_root(data: Path, cache: Path) -> Path:
    """The image-folder root inside ``data`` (a folder or the shared tarball, unpacked once)."""
    if data.is_dir():
        return data / "fer2013" if (data / "fer2013").is_dir() else data
    target = cache / "fer2013"
    if not target.is_dir():
        logger.info("unpacking %s into %s", data, cache)
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as archive:
            archive.extractall(cache, filter="data")
    return target


def seconds_per_step(params_file: Path, overrides: list[str], steps: int = 12) -> float:
    params = load_params(params_file, overrides)
    model = create_model(params.model, num_classes=len(params.data.classes)).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = torch.device("cpu")
    precision = resolve_precision(params.train.precision, device)
    size = params.data.image_size
    images = torch.randint(0, 256, (params.train.batch_size, 1, size, size), dtype=torch.uint8)
    labels = torch.randint(0, len(params.data.classes), (params.train.batch_size,))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        batch = train_transform(images, params.augment, params.model, generator)
        with autocast(device, precision):
            output = model.forward_with_attention(batch.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(output.logits.float(), labels)
        if output.attention is not None:
            loss = loss + attention_regularization(output.attention)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013-train-val.tar.gz"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/budgeted"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra params overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    root = fer2013_root(args.data, args.cache)
    overrides = [f"data.root={root}", f"train.output_dir={args.out}", *args.overrides]
    params = load_params(args.params, overrides)
    datasets, _ = load_splits(
        params.data, [params.data.train_split, params.data.val_split], seed=params.train.seed
    )
    steps = math.ceil(len(datasets[params.data.train_split]) / params.train.batch_size)
    step_seconds = seconds_per_step(args.params, overrides)
    # 15% headroom for validation, EMA updates and the noisy shared machine.
    epochs = max(1, int(args.minutes * 60 / (steps * step_seconds * 1.15)))
    logger.info(
        "%.3f s/step x %d steps/epoch -> %d epochs in %.0f minutes", step_seconds, steps, epochs, args.minutes
    )

    params = load_params(
        args.params, [*overrides, f"train.epochs={epochs}", f"train.max_minutes={args.minutes}"]
    )
    result = train(params, datasets=datasets, progress=False)
    summary = {
        **result.summary(),
        "budget_minutes": args.minutes,
        "planned_epochs": epochs,
        "train_images": len(datasets[params.data.train_split]),
        "val_images": len(datasets[params.data.val_split]),
        "final_val_accuracy": result.history[-1].val_accuracy,
        "overrides": args.overrides,
        "torch_threads": torch.get_num_threads(),
    }
    write_json(args.out / "budgeted_run.json", summary)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
