"""Per-face emotion probabilities for whole images: decode, detect, crop, classify.

The faces are found and cut exactly as the cleaning step cut the training faces (the same Haar
detector settings and margin, read from the model's stored params), then classified in batches.
Every input gives at least one :class:`FacePrediction`: a face, ``no_face`` or ``error`` (an
unreadable input is reported and the batch goes on), so callers never lose track of an input.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from emonext.checkpoint import Checkpoint, CheckpointError, model_from_checkpoint
from emonext.cleaning.faces import Box, FaceDetector, HaarFaceDetector, crop_face, select_faces
from emonext.cleaning.pipeline import UnusableImage, decode_gray, resize_square
from emonext.config import ConfigError, FaceDetectionConfig, section_from_dict
from emonext.evaluation.evaluate import predict_probabilities
from emonext.models import EmotionModel

logger = logging.getLogger(__name__)

#: What :meth:`EmotionPredictor.predict` accepts per image: a file path, encoded bytes (or their
#: base64 text, as JSON requests carry them) or a decoded array (H, W) gray or (H, W, 3) RGB.
ImageInput = str | Path | bytes | np.ndarray

Status = Literal["face", "no_face", "error"]


@dataclass(frozen=True)
class FacePrediction:
    """One face of one input image (or why the image has none).

    Attributes:
        image: Index of the input image.
        face: Index of the face in the image (left to right); -1 for ``no_face`` and ``error``.
        status: ``face``, ``no_face`` or ``error``.
        box: The face's window in the input's pixels (the whole image when detection is off).
        probabilities: One per class, in the model's class order; None without a face.
        detail: Why there is no face (the decode error names the input).
    """

    image: int
    face: int
    status: Status
    box: Box | None = None
    probabilities: np.ndarray | None = None
    detail: str = ""

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        """JSON-ready row: box, the top class, its confidence and every class probability."""
        row: dict[str, Any] = {"image": self.image, "face": self.face, "status": self.status}
        if self.box is not None:
            row["box"] = {
                "x": self.box.x,
                "y": self.box.y,
                "width": self.box.width,
                "height": self.box.height,
            }
        if self.probabilities is not None:
            top = int(self.probabilities.argmax())
            row["label"] = classes[top]
            row["confidence"] = float(self.probabilities[top])
            pairs = zip(classes, self.probabilities, strict=True)
            row["probabilities"] = {name: float(value) for name, value in pairs}
        if self.detail:
            row["detail"] = self.detail
        return row


class FaceClassifier(Protocol):
    """Anything that turns uint8 faces into class probabilities (the torch model, onnxruntime)."""

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, num_classes) for uint8 faces (N, S, S) at the model's face size."""
        ...


class TorchFaceClassifier:
    """The checkpoint's network in PyTorch, scoring faces in batches (fp32, as evaluation does).

    Args:
        checkpoint: Weights and preprocessing.
        device: ``cpu`` or ``cuda``.
        batch_size: Faces per forward pass.
    """

    def __init__(
        self, checkpoint: Checkpoint, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model: EmotionModel = model_from_checkpoint(checkpoint).to(self.device)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(faces)).unsqueeze(1)
        return predict_probabilities(
            self.model, batch, self.checkpoint.model_config, self.batch_size, self.device
        )


class EmotionPredictor:
    """A face detector, the crop the model was trained on, and a classifier.

    Detection settings come from ``face_config`` (inference tunes them for speed) or else from
    the model's stored ``clean.face``; the crop margin always comes from the stored settings, so
    faces are cut as the training faces were. Every face is classified, whatever the cleaning
    step's one-face-per-photo policy was.

    Args:
        checkpoint: The model.
        device: Where the torch classifier runs.
        batch_size: Faces per classifier call.
        detector: Overrides the Haar detector built from the settings.
        classifier: Overrides the torch classifier (e.g. onnxruntime).
        face_config: Detection settings; None for the model's stored ones.

    Raises:
        CheckpointError: The checkpoint has no usable face-detection settings.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        detector: FaceDetector | None = None,
        classifier: FaceClassifier | None = None,
        face_config: FaceDetectionConfig | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.classes = checkpoint.classes
        self.margin = face_config_of(checkpoint).margin
        self.face_config = face_config or face_config_of(checkpoint)
        self.face_size = checkpoint.data_config.image_size
        self.classifier = classifier or TorchFaceClassifier(checkpoint, device, batch_size)
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = HaarFaceDetector(self.face_config)
        return self._detector

    def find_faces(self, gray: np.ndarray) -> list[Box]:
        """Every face in a uint8 grayscale frame, left to right."""
        return select_faces(self.detector.detect(gray), "all")

    def crop(self, gray: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
        """The model-sized face for ``box`` (with the training margin) and the window it was cut from."""
        crop, window = crop_face(gray, box, self.margin)
        return resize_square(np.ascontiguousarray(crop), self.face_size), window

    def classify(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, num_classes) for model-sized uint8 faces; (0, num_classes) for none."""
        if not faces:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self.classifier(np.stack(faces))

    def predict(self, images: Sequence[ImageInput], detect_faces: bool = True) -> list[FacePrediction]:
        """Classify every face of every image.

        Args:
            images: Paths, encoded bytes (or base64 text) or decoded arrays.
            detect_faces: Find faces with the detector; False treats each image as one
                pre-cropped face (FER2013-style inputs).

        Returns:
            Rows in input order: one per face, or one ``no_face`` / ``error`` row per image.
        """
        rows: list[FacePrediction] = []
        faces: list[np.ndarray] = []
        face_rows: list[int] = []
        for index, image in enumerate(images):
            try:
                gray = to_gray(image)
            except ValueError as error:
                rows.append(FacePrediction(index, -1, "error", detail=str(error)))
                continue
            height, width = gray.shape
            if detect_faces:
                boxes = self.find_faces(gray)
                if not boxes:
                    detail = f"no face found in {_name(image)}"
                    rows.append(FacePrediction(index, -1, "no_face", detail=detail))
                    continue
                crops = [self.crop(gray, box) for box in boxes]
            else:
                crops = [(resize_square(gray, self.face_size), Box(0, 0, width, height))]
            for number, (face, window) in enumerate(crops):
                face_rows.append(len(rows))
                faces.append(face)
                rows.append(FacePrediction(index, number, "face", box=window))
        for row_index, values in zip(face_rows, self.classify(faces), strict=True):
            row = rows[row_index]
            rows[row_index] = FacePrediction(row.image, row.face, row.status, row.box, values)
        return rows


def face_config_of(checkpoint: Checkpoint) -> FaceDetectionConfig:
    """The ``clean.face`` settings the model's training faces were cropped with.

    Raises:
        CheckpointError: The stored params have no valid ``clean.face`` section.
    """
    stored = (checkpoint.params.get("clean") or {}).get("face")
    try:
        return section_from_dict(
            FaceDetectionConfig, stored, "clean.face", f"{checkpoint.path} (stored params)"
        )
    except ConfigError as error:
        raise CheckpointError(f"{checkpoint.path}: no usable face-detection settings:\n{error}") from None


def to_gray(image: ImageInput) -> np.ndarray:
    """Decode any accepted input into a uint8 grayscale array (H, W).

    Raises:
        ValueError: The input is not a readable image; the message names it.
    """
    if isinstance(image, np.ndarray):
        return _array_to_gray(image)
    if isinstance(image, str) and not _is_file(image):
        image = _base64_bytes(image)
    try:
        return decode_gray(image if isinstance(image, bytes) else Path(image)).gray
    except UnusableImage as error:
        raise ValueError(f"{_name(image)}: not a usable image ({error.reason}: {error.detail})") from None


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        # ITU-R 601 luma, as PIL's convert("L") used for files and training faces.
        array = array[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if array.ndim != 2 or min(array.shape) == 0:
        raise ValueError(f"array of shape {array.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating) and values.max(initial=0.0) <= 1.0:
        values = values * 255.0  # floats in [0, 1]
    elif array.dtype == np.uint16:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. base64 text longer than a file name may be
        return False


def _base64_bytes(text: str) -> bytes:
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(
            f"{shown!r}: neither an existing image file nor base64-encoded image bytes"
        ) from None


def _name(image: ImageInput) -> str:
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    if isinstance(image, np.ndarray):
        return f"<array {image.shape}>"
    return str(image) if len(str(image)) <= 80 else str(image)[:77] + "..."


__all__ = [
    "EmotionPredictor",
    "FaceClassifier",
    "FacePrediction",
    "ImageInput",
    "TorchFaceClassifier",
    "face_config_of",
    "to_gray",
]
