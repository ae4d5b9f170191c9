"""The MLflow pyfunc flavour of an emonext model: weights + config in, per-face probabilities out.

The logged model holds the safetensors checkpoint as an artifact and this class as code (MLflow's
models-from-code, see :mod:`emonext.mlflow_pyfunc_entry`): nothing is pickled, and the network is
rebuilt from the stored config when the model loads, so any input size works and serving needs
only the ``emonext`` package.

``predict`` takes a DataFrame with an ``image`` column whose cells are file paths, encoded image
bytes, base64 text (what JSON requests carry) or decoded arrays, and returns one row per face with
its box, top label, confidence and the probability of every class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

#: Name of the checkpoint in the logged model's ``artifacts``.
CHECKPOINT_ARTIFACT = "checkpoint"
IMAGE_COLUMN = "image"
BOX_COLUMNS = ("x", "y", "width", "height")


def signature(classes: tuple[str, ...]) -> ModelSignature:
    """Input: an ``image`` column of any accepted type; params: ``detect_faces``; output: per face."""
    outputs = [
        ColSpec("long", "image"),
        ColSpec("long", "face"),
        ColSpec("string", "status"),
        *(ColSpec("long", name, required=False) for name in BOX_COLUMNS),
        ColSpec("string", "label", required=False),
        ColSpec("double", "confidence", required=False),
        *(ColSpec("double", name, required=False) for name in classes),
        ColSpec("string", "detail", required=False),
    ]
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("detect_faces", "boolean", True)]),
    )


class EmotionPyfunc(PythonModel):
    """Rebuilds the classifier from the checkpoint artifact; detects and classifies faces."""

    def load_context(self, context: PythonModelContext) -> None:
        from emonext.checkpoint import read_checkpoint
        from emonext.predict import EmotionPredictor

        self.predictor = EmotionPredictor(read_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT]))

    # No type hints: MLflow would try to derive a (list-only) signature from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        images = _images(model_input)
        detect_faces = bool((params or {}).get("detect_faces", True))
        rows = self.predictor.predict(images, detect_faces=detect_faces)
        classes = self.predictor.classes
        records = []
        for row in rows:
            record = row.to_dict(classes)
            record.update(record.pop("box", {}))
            record.update(record.pop("probabilities", {}))
            record.setdefault("detail", "")
            records.append(record)
        columns = ["image", "face", "status", *BOX_COLUMNS, "label", "confidence", *classes, "detail"]
        return pd.DataFrame.from_records(records, columns=columns)


def _images(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"input has columns {list(model_input.columns)}; expected an {IMAGE_COLUMN!r} column"
            )
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        return [model_input]
    if isinstance(model_input, list | tuple | np.ndarray):
        return list(model_input)
    return [model_input]
