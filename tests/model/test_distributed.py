"""Data-parallel training under torchrun: two CPU processes (gloo) on the bundled sample."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emonext.training.distributed import DistributedContext, rank_seed
from tests.conftest import PARAMS_FILE, TINY

REPO = Path(__file__).resolve().parents[2]

#: The tiny model of ``TINY`` on 4 faces per class: 14 per rank, two steps of 8 per epoch (a
#: global batch of 16, as the one-process loss test), and a learning rate that fits them quickly.
DDP = [*TINY, "data.max_per_class=4", "train.batch_size=8", "train.lr=3e-3", "augment.rotation=0"]
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+\s+loss")


def torchrun(
    output_dir: Path, *overrides: str, log_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m emonext.train`` on the sample.

    ``--standalone`` rendezvouses on a free local port, so parallel test runs do not clash.
    With ``log_dir``, each rank's stdout and stderr go to their own files under it.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    if log_dir is not None:
        command += ["--log-dir", str(log_dir), "--redirects", "3"]
    command += ["-m", "emonext.train", "--params", str(PARAMS_FILE), "--no-progress"]
    for override in [*DDP, f"train.output_dir={output_dir}", *overrides]:
        command += ["--set", override]
    # No inherited torchrun variables; a wide console so that Rich keeps each log line whole.
    env = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(COLUMNS="200", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def rank_log(log_dir: Path, rank: int, stream: str) -> str:
    """What ``rank`` wrote to ``stream`` under torchrun's ``--log-dir`` layout."""
    (file,) = log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")
    return file.read_text()


def test_sharding_pads_to_equal_disjoint_shards() -> None:
    order = torch.tensor([5, 3, 9, 1, 7])
    shards = [DistributedContext(torch.device("cpu"), rank, rank, 2).shard(order) for rank in (0, 1)]
    assert [shard.tolist() for shard in shards] == [[5, 9, 7], [3, 1, 5]]  # padded with order[0]
    single = DistributedContext(torch.device("cpu")).shard(order)
    assert torch.equal(single, order)


def test_rank_seeds_differ_and_rank_zero_keeps_the_single_process_seed() -> None:
    assert rank_seed(42, 0) == 42
    assert len({rank_seed(42, rank) for rank in range(8)}) == 8


@pytest.mark.slow
def test_two_processes_train_with_one_set_of_outputs(tmp_path: Path) -> None:
    output_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    result = torchrun(output_dir, "train.epochs=6", log_dir=log_dir)

    summary = json.loads(rank_log(log_dir, 0, "stdout"))  # exactly one JSON document
    assert summary["epochs_run"] == 6 and summary["output_dir"] == str(output_dir)
    assert rank_log(log_dir, 1, "stdout") == "" and result.stdout == ""
    assert not EPOCH_LINE.search(rank_log(log_dir, 1, "stderr")), "rank 1 logs no epochs"
    assert [int(epoch) for epoch in EPOCH_LINE.findall(rank_log(log_dir, 0, "stderr"))] == [1, 2, 3, 4, 5, 6]

    rows = json.loads((output_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(0.0 <= row["val_accuracy"] <= 1.0 for row in rows)
    assert sorted(path.name for path in output_dir.iterdir()) == [
        "best.safetensors",
        "last.pt",
        "metrics.json",
        "summary.json",
    ]
    assert json.loads((output_dir / "summary.json").read_text())["epochs_run"] == 6


@pytest.mark.slow
def test_two_processes_resume_from_last_checkpoint(tmp_path: Path) -> None:
    output_dir = tmp_path / "run"
    first = torchrun(output_dir, "train.epochs=2")
    assert json.loads(first.stdout)["epochs_run"] == 2

    resumed = torchrun(output_dir, "train.epochs=3", "train.resume=true")
    assert json.loads(resumed.stdout)["epochs_run"] == 3  # one summary, from rank 0
    assert resumed.stderr.count("resumed from") == 1 and "after epoch 2" in resumed.stderr
    assert [int(epoch) for epoch in EPOCH_LINE.findall(resumed.stderr)] == [3]
    rows = json.loads((output_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2, 3]


@pytest.mark.slow
def test_time_budget_stops_every_rank_together(tmp_path: Path) -> None:
    # Rank 0 decides and broadcasts the stop: a rank that went on alone would hang or fail the run.
    result = torchrun(tmp_path / "run", "train.epochs=3", "train.max_minutes=0.0001")
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 1 and summary["stopped_early"]
    assert "time budget" in summary["stop_reason"] and result.stderr.count("stopping after epoch 1") == 1
