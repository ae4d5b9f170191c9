"""What the image, video and webcam front ends share: the predictor interface and stage timers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from emonext.cleaning.faces import Box
from emonext.config import Params

if TYPE_CHECKING:
    from emonext.predict import EmotionPredictor
    from emonext.registry import LoadedModel

logger = logging.getLogger(__name__)

#: Stages timed by the video and webcam pipelines, in pipeline order.
STAGES = ("decode", "detect", "classify", "annotate", "encode")


@runtime_checkable
class FacePipeline(Protocol):
    """What inference needs from a predictor (:class:`emonext.predict.EmotionPredictor`).

    A protocol rather than the class, so a caller can pass a wrapper (the GUI serialises calls
    to one shared predictor with a lock) or a stub in tests.
    """

    classes: Sequence[str]

    def find_faces(self, gray: np.ndarray) -> list[Box]:
        """Every face in a uint8 grayscale frame, left to right."""
        ...

    def crop(self, gray: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
        """The model-sized face for ``box`` and the window it was cut from."""
        ...

    def classify(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, num_classes) for model-sized uint8 faces."""
        ...


class StageTimer:
    """Wall-clock seconds per pipeline stage (the benchmark reads them from the reports)."""

    def __init__(self, stages: Sequence[str] = STAGES) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Add the time spent in the ``with`` body to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, float]:
        return {stage: round(value, 4) for stage, value in self.seconds.items()}


def box_dict(box: Box) -> dict[str, int]:
    """A box as JSON, with the keys :meth:`emonext.predict.FacePrediction.to_dict` uses."""
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height}


def probabilities_dict(probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``label``, ``confidence`` and every class probability, as JSON."""
    top = int(np.argmax(probabilities))
    return {
        "label": classes[top],
        "confidence": round(float(probabilities[top]), 6),
        "probabilities": {
            name: round(float(value), 6) for name, value in zip(classes, probabilities, strict=True)
        },
    }


def build_predictor(
    params: Params, model: str | None = None, backend: str | None = None
) -> tuple[LoadedModel, EmotionPredictor]:
    """The model every inference entrypoint uses, with the inference detector settings.

    Args:
        params: ``infer`` (model, backend, device, batch size, face detection) and ``register``
            (the MLflow store where the champion is looked up).
        model: Model reference overriding ``infer.model``.
        backend: ``torch`` or ``onnx`` overriding ``infer.backend``.

    Returns:
        The loaded model (see :func:`emonext.registry.load_default_model`) and its predictor.

    Raises:
        RegistryError, CheckpointError: The model cannot be loaded (the message names it).
    """
    from emonext.registry import load_default_model

    infer = params.infer
    loaded = load_default_model(model or infer.model, params.register.effective_tracking_uri())
    chosen = backend or infer.backend
    options: dict[str, Any] = {"face_config": infer.face}
    if chosen == "onnx":
        from emonext.inference.onnx_backend import onnx_classifier_for

        options["classifier"] = onnx_classifier_for(loaded.checkpoint, batch_size=infer.batch_size)
    version = f" version {loaded.version}" if loaded.version else ""
    logger.info("model %s%s, %s backend", loaded.uri, version, chosen)
    return loaded, loaded.predictor(device=infer.device, batch_size=infer.batch_size, **options)


__all__ = ["STAGES", "FacePipeline", "StageTimer", "box_dict", "build_predictor", "probabilities_dict"]
