"""Package a trained checkpoint as emonext's built-in model (fp16 weights + model card).

The built-in model makes inference work offline with no registry. It is rebuilt from a training
run and its evaluation report:

    python scripts/make_builtin_model.py --checkpoint runs/budgeted/best.safetensors \
        --report runs/budgeted/evaluate/report.json --data runs/cache/fer2013 \
        --command "python bench/budgeted_run.py --minutes 30"

Weights are stored in float16 (half the size), or with ``--weights int8`` as int8 with a scale per
output channel (a quarter; for models whose float16 copy is over the 15 MB limit, e.g. resnet18);
the loader turns them back into float32. The script checks that the packaged model predicts the
same classes as the original on the report's faces before replacing the shipped one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from emonext.checkpoint import (
    Checkpoint,
    WeightsDtype,
    compact_weights,
    model_from_checkpoint,
    read_checkpoint,
    save_model_checkpoint,
)
from emonext.data.dataset import load_folder
from emonext.evaluation.evaluate import predict_probabilities
from emonext.fileio import content_hash, write_atomically
from emonext.registry import BUILTIN_DIR, BUILTIN_WEIGHTS

logger = logging.getLogger("make_builtin_model")
MAX_BYTES = 15 * 1024 * 1024


@dataclass(frozen=True)
class CopyCheck:
    """The packaged copy against its float32 original, on the first faces of the evaluated split."""

    faces: int
    agreement: float
    original_accuracy: float
    copy_accuracy: float


def main(
    checkpoint: Annotated[Path, typer.Option(help="trained best.safetensors")],
    report: Annotated[Path, typer.Option(help="report.json of `emonext evaluate` on the val split")],
    data: Annotated[Path, typer.Option(help="the data set it was trained and evaluated on")],
    command: Annotated[str, typer.Option(help="the command that trained it, for the model card")],
    split: Annotated[str, typer.Option(help="split the report scored")] = "val",
    check_faces: Annotated[int, typer.Option(help="faces of the split used to check the copy")] = 4000,
    out: Annotated[Path, typer.Option(help="folder of the built-in model (the package's)")] = BUILTIN_DIR,
    weights: Annotated[
        WeightsDtype, typer.Option(help="float16, or int8 per output channel")
    ] = WeightsDtype.float16,
) -> None:
    source = read_checkpoint(checkpoint)
    document = json.loads(report.read_text())
    out.mkdir(parents=True, exist_ok=True)
    target = out / BUILTIN_WEIGHTS
    staged = target.with_suffix(".staged.safetensors")
    metadata = {**source.metadata, "weights_dtype": weights.value, "source_md5": content_hash(checkpoint)}
    compact = compact_weights(source.state_dict, weights)
    save_model_checkpoint(staged, compact, source.params, source.classes, metadata)
    staged_bytes = staged.stat().st_size
    if staged_bytes > MAX_BYTES:
        staged.unlink()
        hint = " (try --weights int8)" if weights is WeightsDtype.float16 else ""
        raise SystemExit(
            f"{checkpoint}: its {weights.value} copy has {staged_bytes} bytes, "
            f"over the {MAX_BYTES}-byte limit{hint}"
        )

    dataset, _ = load_folder(data, source.data_config.model_copy(update={"max_per_class": None}), split)
    faces, labels = dataset.images[:check_faces], dataset.labels[:check_faces].numpy()
    original = predict_probabilities(model_from_checkpoint(source), faces, source.model_config)
    packaged = predict_probabilities(
        model_from_checkpoint(read_checkpoint(staged)), faces, source.model_config
    )
    agreement = float((original.argmax(1) == packaged.argmax(1)).mean())
    check = CopyCheck(
        faces=len(labels),
        agreement=agreement,
        original_accuracy=float((original.argmax(1) == labels).mean()),
        copy_accuracy=float((packaged.argmax(1) == labels).mean()),
    )
    worst = float(np.abs(original - packaged).max())
    logger.info(
        "%s copy: top-1 agreement %.4f, max probability difference %.5f", weights.value, agreement, worst
    )
    if agreement < 0.99:
        staged.unlink()
        raise SystemExit(f"{weights.value} copy disagrees with the original on {1 - agreement:.1%} of faces")
    staged.replace(target)
    card = model_card(source, document, command, content_hash(data), data, split, target, weights, check)
    write_atomically(out / "MODEL_CARD.md", card)
    logger.info("wrote %s (%.1f MB) and MODEL_CARD.md", target, target.stat().st_size / 2**20)


def model_card(
    checkpoint: Checkpoint,
    report: dict,
    command: str,
    data_md5: str,
    data: Path,
    split: str,
    weights: Path,
    weights_dtype: WeightsDtype,
    check: CopyCheck,
) -> str:
    model = checkpoint.model_config
    train = checkpoint.params["train"]
    classes = list(report["classes"])
    if model.arch == "emonext":
        architecture = (
            f"EmoNeXt / {model.backbone}, input {model.input_size} px, "
            f"STN {model.stn}, SE {model.se}, self-attention {model.self_attention}"
        )
    else:
        architecture = f"{model.arch} (timm, from scratch), input {model.input_size} px"
    attention = f"λ {train['sa_lambda']:g}, " if model.arch == "emonext" and model.self_attention else ""
    storage = "float16"
    if weights_dtype is WeightsDtype.int8:
        storage = "int8 per output channel (norms and biases float16)"
    lines = [
        "# emonext built-in model",
        "",
        "The model `emonext predict` and `emonext ui` use when no `--model` is given and the MLflow",
        'registry has no `champion` (`load_model("builtin")`), trained by the command below. The',
        "README's Benchmarks (accuracy per CPU budget) compare it with the other configurations.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {architecture} |",
        f"| weights | `{weights.name}`, {storage} ({weights.stat().st_size / 2**20:.1f} MB), "
        f"top-1 agreement with the float32 original {check.agreement:.2%} on {check.faces} `{split}` faces, "
        f"accuracy there {check.copy_accuracy:.4f} (original {check.original_accuracy:.4f}) |",
        f"| training command | `{command}` |",
        f"| data | FER2013 train (image folders), DVC md5 `{data_md5}` of `{data.name}` |",
        f"| evaluated on | FER2013 PublicTest (`{split}` split), {report['num_samples']} faces |",
        f"| accuracy | {report['accuracy']:.4f} |",
        f"| macro-F1 | {report['macro_f1']:.4f} |",
        f"| best epoch | {checkpoint.metadata.get('epoch')} of {train['epochs']} planned |",
        f"| recipe | AdamW lr {train['lr']:g}, batch {train['batch_size']}, weight decay "
        f"{train['weight_decay']:g}, {attention}drop-path {model.drop_path:g}, "
        f"label smoothing {train['label_smoothing']:g}, EMA {train['ema_decay'] if train['ema'] else 'off'}, "
        f"budget {train['max_minutes']} min |",
        "",
        "## Per class (val)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in classes:
        row = report["per_class"][name]
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
        )
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| true \\ predicted | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---:|" * len(classes))
    for name, row in zip(classes, report["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(value) for value in row) + " |")
    lines += [
        "",
        "## Limits",
        "",
        "Trained from scratch (no pretrained weights) on 48x48 grayscale FER2013 faces on a 2-core CPU",
        "within the budget above: it is weakest on the classes with the lowest F1 above (disgust has",
        "1.5% of the training faces) and expects a frontal face crop like the Haar detector produces.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    typer.run(main)
