"""Training behaviour on the bundled sample: outputs, determinism, resume, budget, balancing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from emonext.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from emonext.data.dataset import load_splits
from emonext.evaluation.evaluate import predict_probabilities
from emonext.training import EpochMetrics, train
from emonext.training.trainer import _class_weights
from tests.conftest import sample_params, tiny_params

COMPARED = ("train_loss", "train_ce", "train_sa", "train_accuracy", "val_accuracy", "val_macro_f1", "lr")


def comparable(history: list[EpochMetrics]) -> list[dict[str, float]]:
    return [{key: value for key, value in asdict(row).items() if key in COMPARED} for row in history]


def test_training_writes_metrics_and_checkpoints(trained_run: Path) -> None:
    rows = json.loads((trained_run / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(0.0 <= row["val_accuracy"] <= 1.0 and row["train_loss"] > 0 for row in rows)
    assert rows[0]["train_sa"] > 0
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["epochs_run"] == 2
    checkpoint = read_checkpoint(trained_run)
    assert checkpoint.path.name == "best.safetensors"
    assert checkpoint.classes == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert checkpoint.model_config.input_size == 32
    assert checkpoint.metadata["epoch"] == summary["best_epoch"]


def test_best_checkpoint_reproduces_its_val_accuracy(trained_run: Path) -> None:
    checkpoint = read_checkpoint(trained_run / "best.safetensors")
    model = model_from_checkpoint(checkpoint)
    datasets, _ = load_splits(checkpoint.data_config, ["val"], seed=0)
    probabilities = predict_probabilities(model, datasets["val"].images, checkpoint.model_config)
    accuracy = (probabilities.argmax(1) == datasets["val"].labels.numpy()).mean()
    assert accuracy == pytest.approx(checkpoint.metadata["val_accuracy"])
    resumable = read_checkpoint(trained_run / "last.pt")
    assert resumable.metadata["epoch"] == 2


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    first = train(tiny_params(tmp_path / "a"), progress=False)
    second = train(tiny_params(tmp_path / "b"), progress=False)
    assert comparable(first.history) == comparable(second.history)
    other = train(tiny_params(tmp_path / "c", "train.seed=7"), progress=False)
    assert comparable(other.history) != comparable(first.history)


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    uninterrupted = train(tiny_params(tmp_path / "full", "train.epochs=3"), progress=False)

    def interrupt_after_first_epoch(metrics: EpochMetrics) -> None:
        if metrics.epoch == 1:
            raise KeyboardInterrupt

    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_params(interrupted_dir, "train.epochs=3"),
            on_epoch_end=interrupt_after_first_epoch,
            progress=False,
        )
    assert read_checkpoint(interrupted_dir / "last.pt").metadata["epoch"] == 1
    assert not list(interrupted_dir.glob(".*.tmp")), "no temporary files left behind"

    resumed = train(tiny_params(interrupted_dir, "train.epochs=3", "train.resume=true"), progress=False)
    assert [row.epoch for row in resumed.history] == [1, 2, 3]
    assert comparable(resumed.history) == comparable(uninterrupted.history)


def test_loss_decreases_when_fitting_a_small_set(tmp_path: Path) -> None:
    result = train(
        tiny_params(
            tmp_path / "fit", "train.epochs=8", "train.lr=3e-3", "data.max_per_class=4", "augment.rotation=0"
        ),
        progress=False,
    )
    assert result.history[-1].train_loss < result.history[0].train_loss - 0.05


def test_time_budget_stops_training(tmp_path: Path) -> None:
    result = train(
        tiny_params(tmp_path / "budget", "train.epochs=5", "train.max_minutes=0.0001"), progress=False
    )
    assert len(result.history) == 1
    assert result.stopped_early and "time budget" in result.stop_reason


def test_early_stopping_on_a_val_accuracy_plateau(tmp_path: Path) -> None:
    # A learning rate of ~0 without EMA or the STN's BatchNorm keeps val accuracy exactly flat.
    frozen = ["train.lr=1e-12", "train.min_lr=0", "train.ema=false", "model.stn=false"]
    result = train(
        tiny_params(tmp_path / "plateau", "train.epochs=6", "train.early_stopping_patience=2", *frozen),
        progress=False,
    )
    assert [row.epoch for row in result.history] == [1, 2, 3]
    assert result.stopped_early and "no val accuracy gain for 2 epochs" in result.stop_reason
    assert result.best_epoch == 1


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_class_balancing_options_train(tmp_path: Path, balance: str) -> None:
    result = train(
        tiny_params(tmp_path / balance, "train.epochs=1", f"train.class_balance={balance}"), progress=False
    )
    assert torch.isfinite(torch.tensor(result.history[0].train_loss))


def test_loss_weights_favour_rare_classes() -> None:
    params = sample_params()
    datasets, _ = load_splits(params.data, ["val"], seed=0)
    unbalanced = datasets["val"].subset([*range(10), 10, *range(20, 70)])  # 1 disgust face
    weights = _class_weights(unbalanced, "loss")
    assert weights[1] > 5 * weights[0]
    counts = unbalanced.class_counts().float()
    assert (weights * counts).sum().item() == pytest.approx(counts.sum().item())


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(trained_run: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=str(corrupt)):
        read_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="model checkpoint not found"):
        read_checkpoint(tmp_path / "nothing.safetensors")
    checkpoint = read_checkpoint(trained_run)
    other_arch = checkpoint.model_config.model_copy(update={"backbone": "convnext_femto"})
    with pytest.raises(CheckpointError, match="weights do not fit emonext/convnext_femto"):
        model_from_checkpoint(dataclasses.replace(checkpoint, model_config=other_arch))


def test_same_weights_give_byte_identical_checkpoints_across_processes(tmp_path: Path) -> None:
    """DVC, the Prefect cache and the registry compare checkpoints by content hash."""
    import subprocess
    import sys

    from emonext.fileio import content_hash

    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from emonext.checkpoint import save_model_checkpoint\n"
        "from tests.conftest import sample_params\n"
        "params = sample_params()\n"
        "state = {'w': torch.arange(6.0), 'b': torch.zeros(2)}\n"
        "metadata = {'epoch': 3, 'x': 0.5}\n"
        "save_model_checkpoint(Path(sys.argv[1]), state, params, params.data.classes, metadata)\n"
    )
    files = [tmp_path / f"{index}.safetensors" for index in range(3)]
    for file in files:
        subprocess.run([sys.executable, "-c", script, str(file)], check=True, cwd=Path(__file__).parents[2])
    assert len({content_hash(file) for file in files}) == 1
    checkpoint = read_checkpoint(files[0])
    assert (
        checkpoint.metadata == {"epoch": 3, "x": 0.5} and checkpoint.classes == sample_params().data.classes
    )
