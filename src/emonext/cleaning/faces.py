"""Face detection and cropping behind one small interface.

:class:`FaceDetector` is what the cleaning pipeline (and live inference) needs from a detector:
boxes in the pixel coordinates of the grayscale frame it was given. :class:`HaarFaceDetector`
implements it with OpenCV's Haar cascade, detecting on a copy of the frame downscaled to at most
``detect_max_side`` (the cascade's cost grows with the pixel count, its recall barely changes)
and mapping the boxes back. Overlapping detections of one face are merged, and
:func:`select_faces` / :func:`crop_face` apply the multi-face policy and the margin.

This module depends on the configuration only, not on the cleaning pipeline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from emonext.config import FaceDetectionConfig

logger = logging.getLogger(__name__)

#: Two detections overlapping by more than this intersection-over-union are one face.
MERGE_IOU = 0.3
#: A detection lying this much (as a fraction of its own area) inside a larger one is the same
#: face: Haar cascades often report a face and a slightly larger box around it.
MERGE_CONTAINED = 0.8


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: top-left corner and size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def side(self) -> int:
        """The shorter side."""
        return min(self.width, self.height)

    def intersection(self, other: Box) -> int:
        """Area shared with ``other``."""
        width = min(self.x + self.width, other.x + other.width) - max(self.x, other.x)
        height = min(self.y + self.height, other.y + other.height) - max(self.y, other.y)
        return max(width, 0) * max(height, 0)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``."""
        shared = self.intersection(other)
        union = self.area + other.area - shared
        return shared / union if union else 0.0

    def scaled(self, factor: float) -> Box:
        """The box with every coordinate multiplied by ``factor`` (rounded to whole pixels)."""
        return Box(
            round(self.x * factor),
            round(self.y * factor),
            max(1, round(self.width * factor)),
            max(1, round(self.height * factor)),
        )

    def square_with_margin(self, margin: float, image_width: int, image_height: int) -> Box:
        """A square window around the box, ``margin`` of its side wider on each side.

        The window keeps the box's centre where it can; near an image edge it shifts inwards
        rather than being cut (a cut window would be stretched when resized to a square), and it
        shrinks only where the image itself is smaller. The box stays inside the window.

        Args:
            margin: Extra border on each side, as a fraction of the box's longer side.
            image_width: Width of the image the window must fit.
            image_height: Height of that image.

        Returns:
            The window, inside the image.
        """
        wanted = math.ceil(max(self.width, self.height) * (1 + 2 * margin))
        side = max(1, min(wanted, image_width, image_height))
        centre_x, centre_y = self.x + self.width / 2, self.y + self.height / 2
        left = min(max(round(centre_x - side / 2), 0), image_width - side)
        top = min(max(round(centre_y - side / 2), 0), image_height - side)
        return Box(left, top, side, side)


class FaceDetector(Protocol):
    """Anything that finds faces in a grayscale frame."""

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Return the faces in ``gray`` (uint8, H x W) in its pixel coordinates, largest first."""
        ...


class HaarFaceDetector:
    """OpenCV Haar-cascade face detector.

    Args:
        config: Cascade, scale step, neighbours, minimum face size and detection resolution.

    Raises:
        FileNotFoundError: The cascade file does not exist or OpenCV cannot load it.
    """

    def __init__(self, config: FaceDetectionConfig) -> None:
        self.config = config
        self.cascade_path = resolve_cascade(config.cascade)
        self._cascade = cv2.CascadeClassifier(str(self.cascade_path))
        if self._cascade.empty():
            raise FileNotFoundError(f"{self.cascade_path}: OpenCV could not load this Haar cascade")

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Find faces of at least ``config.min_size`` pixels.

        Args:
            gray: uint8 grayscale frame (H, W).

        Returns:
            Face boxes in ``gray``'s coordinates, overlapping detections merged, largest first.
        """
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a uint8 grayscale frame (H, W), got {gray.dtype} {gray.shape}")
        height, width = gray.shape
        scale = min(1.0, self.config.detect_max_side / max(height, width))
        frame = gray
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frame = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        # Equalising evens out exposure, which the cascade's fixed Haar features are sensitive to.
        frame = cv2.equalizeHist(frame)
        min_side = max(1, math.floor(self.config.min_size * scale))
        found = self._cascade.detectMultiScale(
            frame,
            scaleFactor=self.config.scale_factor,
            minNeighbors=self.config.min_neighbors,
            minSize=(min_side, min_side),
        )
        boxes = [Box(*(int(value) for value in row)).scaled(1 / scale) for row in np.reshape(found, (-1, 4))]
        boxes = [box for box in boxes if box.side >= self.config.min_size]
        return merge_overlapping(boxes)


def resolve_cascade(cascade: str) -> Path:
    """Find a cascade: an existing path, else a file name in OpenCV's bundled cascades.

    Raises:
        FileNotFoundError: Neither exists.
    """
    path = Path(cascade).expanduser()
    if path.is_file():
        return path
    bundled = Path(cv2.data.haarcascades) / cascade
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"Haar cascade {cascade!r} not found as a path nor in OpenCV's {cv2.data.haarcascades} "
        f"(e.g. haarcascade_frontalface_default.xml, haarcascade_frontalface_alt2.xml)"
    )


def merge_overlapping(
    boxes: Sequence[Box], iou: float = MERGE_IOU, contained: float = MERGE_CONTAINED
) -> list[Box]:
    """Keep the largest of every set of overlapping boxes.

    Args:
        boxes: Detections.
        iou: Boxes overlapping a kept one by more than this intersection-over-union are dropped.
        contained: Boxes with more than this fraction of their area inside a kept one are dropped.

    Returns:
        The remaining boxes, largest first.
    """
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda item: (-item.area, item.x, item.y)):
        overlaps = any(
            box.iou(other) > iou or box.intersection(other) > contained * box.area for other in kept
        )
        if not overlaps:
            kept.append(box)
    return kept


def select_faces(boxes: Sequence[Box], policy: Literal["largest", "all"]) -> list[Box]:
    """Apply the multi-face policy.

    Args:
        boxes: Detected faces.
        policy: ``largest`` keeps the largest face, ``all`` keeps every face (left to right).

    Returns:
        The faces to crop.
    """
    if not boxes:
        return []
    if policy == "largest":
        return [max(boxes, key=lambda box: (box.area, -box.x, -box.y))]
    return sorted(boxes, key=lambda box: (box.x, box.y))


def crop_face(image: np.ndarray, box: Box, margin: float) -> tuple[np.ndarray, Box]:
    """Cut the square window around a face out of ``image``.

    Args:
        image: (H, W) or (H, W, C) image.
        box: The face, in ``image``'s coordinates.
        margin: Extra border on each side, as a fraction of the face's side.

    Returns:
        The crop (a view of ``image``) and the window it was cut from.
    """
    height, width = image.shape[:2]
    window = box.square_with_margin(margin, width, height)
    return image[window.y : window.y + window.height, window.x : window.x + window.width], window
