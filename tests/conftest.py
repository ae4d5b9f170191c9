"""Shared fixtures: the repository's params.yaml and bundled FER2013 sample, scaled down."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from emonext.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "params.yaml"
SAMPLE = REPO / "data" / "sample" / "fer2013"

#: Small enough for a training epoch in well under a second on two cores.
TINY = [
    f"data.root={SAMPLE}",
    "evaluate.split=val",
    "model.arch=emonext",  # the tests exercise EmoNeXt (STN, SE, attention), not params.yaml's default
    "model.backbone=convnext_atto",
    "model.input_size=32",
    "model.output_stride=32",
    "train.epochs=2",
    "train.batch_size=16",
    "train.warmup_epochs=0.5",
    "train.precision=fp32",
    "data.max_per_class=6",
]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but holds almost no data (a bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def sample_params(*overrides: str) -> Params:
    """The repository's params reading the bundled sample (the default data.root is the split output)."""
    return load_params(PARAMS_FILE, [f"data.root={SAMPLE}", *overrides])


def tiny_params(output_dir: Path, *overrides: str) -> Params:
    """The repository's params with a tiny model and data cap, writing into ``output_dir``."""
    return load_params(
        PARAMS_FILE,
        [
            *TINY,
            f"train.output_dir={output_dir}",
            f"evaluate.output_dir={output_dir / 'evaluate'}",
            *overrides,
        ],
    )


@pytest.fixture
def params(tmp_path: Path) -> Params:
    return tiny_params(tmp_path / "run")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained once for the whole session; returns its output folder."""
    from emonext.training import train

    output_dir = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_params(output_dir), progress=False)
    return output_dir
