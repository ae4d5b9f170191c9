"""Budgeted run: train the default config on full FER2013 for a fixed wall-clock budget.

The number of epochs is chosen so the cosine schedule ends inside the budget: a one-epoch probe
of the real trainer on a subset, plus one validation pass, estimates an epoch's duration, and
``train.max_minutes`` stops the run regardless. Validation is FER2013's PublicTest split (``val/``
in the image-folder tarball).

    python bench/budgeted_run.py --data ../shared/data/fer2013-train-val.tar.gz --minutes 30
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from fer2013_data import SHARED_FER2013, fer2013_root

from emonext.config import Params, load_params
from emonext.data.dataset import FaceDataset, load_splits
from emonext.evaluation.evaluate import predict_probabilities
from emonext.fileio import write_json
from emonext.models import create_model
from emonext.training import train

logger = logging.getLogger("bench.budgeted_run")


def seconds_per_epoch(params: Params, datasets: dict[str, FaceDataset], probe_images: int = 3000) -> float:
    """Estimate one epoch's wall time with the real trainer: a one-epoch run on ``probe_images``
    training faces (augmentation, EMA, logging included) plus one full validation pass."""
    train_set = datasets[params.data.train_split]
    probe_set = train_set.subset(
        torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:probe_images]
    )
    with tempfile.TemporaryDirectory() as probe_dir:
        probe_params = params.model_copy(
            update={"train": params.train.model_copy(update={"epochs": 1, "output_dir": Path(probe_dir)})}
        )
        result = train(probe_params, datasets={params.data.train_split: probe_set}, progress=False)
    train_seconds = result.history[0].seconds * len(train_set) / len(probe_set)
    model = create_model(params.model, num_classes=len(params.data.classes)).to(
        memory_format=torch.channels_last
    )
    start = time.perf_counter()
    predict_probabilities(model, datasets[params.data.val_split].images, params.model, batch_size=256)
    return train_seconds + time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_FER2013)
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
    epoch_seconds = seconds_per_epoch(params, datasets)
    # 15% headroom: full epochs measured 10-15% slower than the probe extrapolates (122 s against
    # 106 s for EmoNeXt-atto), and a schedule cut short by the budget never reaches its low-lr end.
    epochs = max(1, int(args.minutes * 60 / (epoch_seconds * 1.15)))
    logger.info("about %.0f s per epoch -> %d epochs in %.0f minutes", epoch_seconds, epochs, args.minutes)

    params = load_params(
        args.params, [*overrides, f"train.epochs={epochs}", f"train.max_minutes={args.minutes}"]
    )
    result = train(params, datasets=datasets, progress=False)
    summary = {
        **result.summary(),
        "budget_minutes": args.minutes,
        "planned_epochs": epochs,
        "estimated_epoch_seconds": round(epoch_seconds, 1),
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
