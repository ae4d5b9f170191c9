"""Score a trained model on labelled faces and write its report, confusion matrix and plot."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from emonext.checkpoint import Checkpoint, model_from_checkpoint, read_checkpoint
from emonext.config import ModelConfig, Params
from emonext.data.dataset import FaceDataset, load_folder
from emonext.data.transforms import eval_transform, ten_crop_transform
from emonext.evaluation.metrics import ClassificationReport, classification_report, dvc_confusion_rows
from emonext.evaluation.plots import plot_confusion_matrix
from emonext.fileio import content_hash, write_json
from emonext.models import EmotionModel
from emonext.runtime import ResolvedPrecision, autocast, select_device

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.json"
CONFUSION_PLOT = "confusion.png"


@torch.inference_mode()
def predict_probabilities(
    model: EmotionModel,
    images: torch.Tensor,
    model_config: ModelConfig,
    batch_size: int = 256,
    device: torch.device | None = None,
    precision: ResolvedPrecision = "fp32",
    tta: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities for uint8 faces (N, 1, H, W).

    Args:
        model: The classifier; switched to eval mode and restored afterwards.
        images: uint8 faces.
        model_config: Preprocessing (input size, normalisation).
        batch_size: Faces per forward pass.
        device: Where to compute; the model's device when None.
        precision: Autocast precision.
        tta: Average the softmax over TenCrop views.
        progress: Show a progress bar.

    Returns:
        float32 array (N, num_classes).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    try:
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
            batch = images[start : start + batch_size]
            if tta:
                views = ten_crop_transform(batch, model_config)
                with autocast(device, precision):
                    logits = model(views.flatten(0, 1).to(device, memory_format=torch.channels_last)).float()
                probabilities = logits.softmax(-1).unflatten(0, views.shape[:2]).mean(1)
            else:
                with autocast(device, precision):
                    inputs = eval_transform(batch, model_config).to(device, memory_format=torch.channels_last)
                    logits = model(inputs).float()
                probabilities = logits.softmax(-1)
            outputs.append(probabilities.cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


@dataclass(frozen=True)
class EvaluationResult:
    """A scored model and where its outputs were written."""

    report: ClassificationReport
    report_file: Path
    confusion_file: Path
    confusion_plot: Path


def evaluate_dataset(
    checkpoint: Checkpoint,
    dataset: FaceDataset,
    output_dir: Path,
    batch_size: int = 256,
    tta: bool = False,
    device: str = "auto",
    name: str | None = None,
) -> EvaluationResult:
    """Score ``checkpoint`` on ``dataset`` and write ``report.json``, ``confusion.json`` (DVC's
    confusion-matrix format) and ``confusion.png`` into ``output_dir``.

    Raises:
        ValueError: The dataset's classes differ from the model's.
    """
    if tuple(dataset.classes) != tuple(checkpoint.classes):
        raise ValueError(
            f"data classes {list(dataset.classes)} differ from the model's classes {list(checkpoint.classes)}"
        )
    torch_device = select_device(device)
    model = model_from_checkpoint(checkpoint).to(torch_device, memory_format=torch.channels_last)
    # fp32 everywhere, as the trainer's validation: scores match the saved val accuracy.
    probabilities = predict_probabilities(
        model, dataset.images, checkpoint.model_config, batch_size, torch_device, "fp32", tta, progress=True
    )
    predicted = probabilities.argmax(1)
    truth = dataset.labels.numpy()
    report = classification_report(truth, predicted, dataset.classes)

    output_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "name": name or checkpoint.path.parent.name + ("+tta" if tta else ""),
        "model": str(checkpoint.path),
        "model_md5": content_hash(checkpoint.path),
        "tta": tta,
        "faces_sha256": faces_fingerprint(dataset),
        **report.to_dict(),
    }
    report_file = write_json(output_dir / REPORT_FILE, document)
    confusion_file = write_json(
        output_dir / CONFUSION_FILE, dvc_confusion_rows(truth, predicted, dataset.classes)
    )
    plot = plot_confusion_matrix(
        report.confusion,
        dataset.classes,
        output_dir / CONFUSION_PLOT,
        title=f"{document['name']}: accuracy {report.accuracy:.1%} (n={report.num_samples})",
    )
    logger.info(
        "accuracy %.4f, macro-F1 %.4f on %d faces", report.accuracy, report.macro_f1, report.num_samples
    )
    return EvaluationResult(report, report_file, confusion_file, plot)


def faces_fingerprint(dataset: FaceDataset) -> str:
    """SHA-256 of the decoded faces and their labels: two scores with the same fingerprint were
    computed on exactly the same test faces (the registry's promotion rule relies on this)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(dataset.classes)).encode())
    digest.update(dataset.images.contiguous().numpy().tobytes())
    digest.update(dataset.labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def run_evaluation(params: Params, model_reference: str | Path | None = None) -> EvaluationResult:
    """The pipeline's evaluate step: score ``model_reference`` (default: ``train.output_dir``)
    on ``evaluate.split`` of ``data.root`` with the ``evaluate`` settings."""
    settings = params.evaluate
    return evaluate_model(
        model_reference=model_reference or params.train.output_dir,
        data=params.data.root,
        output_dir=settings.output_dir,
        split=settings.split,
        batch_size=settings.batch_size,
        tta=settings.tta,
        device=params.train.device,
    )


def evaluate_model(
    model_reference: str | Path,
    data: Path,
    output_dir: Path,
    split: str | None = None,
    batch_size: int = 256,
    tta: bool = False,
    device: str = "auto",
) -> EvaluationResult:
    """Score a checkpoint on a folder (or CSV) of pre-cropped, labelled faces.

    The faces are decoded at the resolution and with the classes the model was trained with.

    Args:
        model_reference: Checkpoint file, training output folder, or registry URI
            (``models:/emonext@champion``, see :func:`emonext.registry.load_model`).
        data: Class layout or split layout folder, or a FER2013 CSV.
        output_dir: Where the report files go.
        split: Split to score in a split layout (e.g. ``val``); required if there are several.
        batch_size: Faces per forward pass.
        tta: TenCrop test-time augmentation.
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    from emonext.registry import fetch_checkpoint

    checkpoint = read_checkpoint(fetch_checkpoint(model_reference))
    data_config = checkpoint.data_config.model_copy(update={"max_per_class": None})
    dataset, load_report = load_folder(data, data_config, split)
    if load_report.unreadable:
        logger.warning("%d unreadable images skipped", len(load_report.unreadable))
    return evaluate_dataset(checkpoint, dataset, output_dir, batch_size, tta, device)
