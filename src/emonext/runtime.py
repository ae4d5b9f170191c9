"""Device, precision and seeding: the one place that decides where and how tensors compute."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={requested!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(requested: str, device: torch.device) -> ResolvedPrecision:
    """Turn ``auto`` into a concrete precision for ``device`` and reject impossible requests."""
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("train.precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    if requested not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be one of 'auto', 'fp32', 'bf16', 'fp16', got {requested!r}")
    return requested  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, precision: ResolvedPrecision) -> Iterator[None]:
    """Mixed-precision region for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(num_threads: int) -> None:
    """Use ``num_threads`` CPU threads for torch; 0 keeps torch's default."""
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
