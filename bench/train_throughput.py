"""Training throughput (images/s) of backbones x input sizes x precisions on this machine.

Each configuration runs ``--warmup`` untimed steps, then ``--steps`` timed optimisation steps
(augmentation + forward + backward + AdamW) on random uint8 faces; the median step time is
reported, since the machine is shared and noisy.

    python bench/train_throughput.py --out bench/results/train_throughput.md
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from emonext.config import load_params
from emonext.data.transforms import train_transform
from emonext.fileio import write_atomically
from emonext.models import attention_regularization, create_model
from emonext.runtime import autocast, cpu_supports_bf16

logger = logging.getLogger("bench.train_throughput")


def measure(params_file: Path, overrides: list[str], precision: str, steps: int, warmup: int) -> float:
    params = load_params(params_file, overrides)
    torch.manual_seed(0)
    model = create_model(params.model, num_classes=7).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch_size = params.train.batch_size
    images = torch.randint(
        0, 256, (batch_size, 1, params.data.image_size, params.data.image_size), dtype=torch.uint8
    )
    labels = torch.randint(0, 7, (batch_size,))
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = train_transform(images, params.augment, params.model, generator)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):  # type: ignore[arg-type]
            output = model.forward_with_attention(batch)
        loss = F.cross_entropy(output.logits.float(), labels)
        if output.attention is not None:
            loss = loss + 0.1 * attention_regularization(output.attention)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--backbones", nargs="+", default=["convnext_atto", "convnext_femto", "convnext_pico"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[48, 64, 96])
    parser.add_argument("--output-strides", nargs="+", type=int, default=[32, 16])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_throughput.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "bf16" in args.precisions and not cpu_supports_bf16():
        logger.warning("this CPU has no native bf16: bf16 rows are emulated")

    lines = [
        f"Training throughput, batch from {args.params}, {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps (torch {torch.__version__})",
        "",
        "| backbone | input | output stride | precision | images/s |",
        "|---|---:|---:|---|---:|",
    ]
    for backbone, size, stride, precision in itertools.product(
        args.backbones, args.sizes, args.output_strides, args.precisions
    ):
        overrides = [
            f"model.backbone={backbone}",
            f"model.input_size={size}",
            f"model.output_stride={stride}",
        ]
        rate = measure(args.params, overrides, precision, args.steps, args.warmup)
        logger.info("%s %dpx output stride %d %s: %.1f images/s", backbone, size, stride, precision, rate)
        lines.append(f"| {backbone} | {size} | {stride} | {precision} | {rate:.1f} |")
    write_atomically(args.out, "\n".join(lines) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
