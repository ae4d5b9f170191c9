"""Emotions of every face in a batch of photos: annotated images, charts and one JSON file.

:func:`analyze_images` expands folders and globs, decodes each file in colour with the same
robustness as the cleaning step's :func:`~emonext.cleaning.pipeline.decode_gray` (EXIF rotation,
CMYK, 16-bit, transparency onto white, the first frame of animations, a pixel cap against
decompression bombs), finds the faces, and classifies all faces of a batch of images in one
network call. A file that cannot be read is reported with its name and the batch goes on; a
photo without a face is ``no_face``, not an error. Every output is written atomically (a
temporary file, then a rename), so a crash never leaves half an image or half a JSON file.

Outputs in ``output_dir``, per image ``<stem>`` (``<stem>-2`` when two inputs share a stem):

* ``<stem>.annotated.jpg``: boxes and ``label NN%`` badges;
* ``<stem>.face<i>.png``: a probability bar chart per face (``i`` from 0, left to right);
* ``<stem>.face<i>.stn.png``: input face and STN-aligned face, with ``stn=True``;
* ``predictions.json``: every image's status and faces (see :meth:`ImageReport.to_dict`).
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from emonext.cleaning.faces import Box
from emonext.cleaning.pipeline import MAX_PIXELS, UnusableImage, decode_pixels
from emonext.fileio import write_atomically, write_json
from emonext.inference.annotate import FaceOverlay, draw_faces, encode_image, label_text, probability_chart
from emonext.inference.common import FacePipeline, box_dict, probabilities_dict

logger = logging.getLogger(__name__)

#: File suffixes picked up when a folder is given (files named explicitly are always tried).
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
    }
)
PREDICTIONS_FILE = "predictions.json"
#: Decoded pixels held at once before a batch is classified and written (about 0.5 GB of RGB),
#: so a folder of 50-megapixel photos does not fill the memory at ``batch_size`` images.
BATCH_PIXELS = 160_000_000
#: JPEG quality of the annotated images.
JPEG_QUALITY = 90

Status = Literal["ok", "no_face", "error"]


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_color(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Upright 8-bit RGB (H, W, 3) of any image, decoded as cleaning decodes (see
    :func:`emonext.cleaning.pipeline.decode_pixels`).

    Raises:
        UnusableImage: ``undecodable`` (empty, truncated, unknown format) or ``too_large``.
    """
    return decode_pixels(source, max_pixels, mode="RGB").gray


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[Path | str]) -> list[Path]:
    """Files to analyse, in order, without repeats.

    A folder contributes its image files (by suffix, recursively, sorted, hidden ones skipped);
    a path with ``*``, ``?`` or ``[`` that does not exist is expanded as a glob (sorted); any
    other path is kept as given, existing or not (a missing file is then reported as an error
    with the others, instead of stopping the batch).

    Raises:
        ValueError: Nothing to analyse (empty folders, globs matching nothing).
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(
                file
                for file in path.rglob("*")
                if file.is_file()
                and file.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in file.relative_to(path).parts)
            )
        elif not path.exists() and glob.has_magic(str(item)):
            found += sorted(
                Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file()
            )
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        shown = ", ".join(str(item) for item in inputs) or "(no inputs)"
        raise ValueError(f"no images found in {shown}")
    return unique


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class ImageFace:
    """One face of one image.

    Attributes:
        index: Position in the image, left to right, from 0.
        box: The window the model saw (face box plus the training margin), in original pixels.
        probabilities: One per class.
        chart: The bar chart file, when written.
        stn: The STN view file, when written.
    """

    index: int
    box: Box
    probabilities: np.ndarray
    chart: Path | None = None
    stn: Path | None = None

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "face": self.index,
            "box": box_dict(self.box),
            **probabilities_dict(self.probabilities, classes),
        }
        if self.chart is not None:
            row["chart"] = self.chart.name
        if self.stn is not None:
            row["stn"] = self.stn.name
        return row


@dataclass
class ImageResult:
    """What became of one input.

    Attributes:
        path: The input as found.
        status: ``ok`` (at least one face), ``no_face`` or ``error``.
        message: Why there is no face or no image (names the file); empty when ``ok``.
        width: Upright image width (0 for errors).
        height: Upright image height.
        faces: The faces, left to right.
        annotated: The annotated image, when written.
    """

    path: Path
    status: Status
    message: str = ""
    width: int = 0
    height: int = 0
    faces: list[ImageFace] = field(default_factory=list)
    annotated: Path | None = None

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"path": str(self.path), "status": self.status}
        if self.message:
            row["message"] = self.message
        if self.status != "error":
            row["width"], row["height"] = self.width, self.height
        row["faces"] = [face.to_dict(classes) for face in self.faces]
        if self.annotated is not None:
            row["annotated"] = self.annotated.name
        return row


@dataclass
class ImageReport:
    """The outcome of :func:`analyze_images`.

    Attributes:
        output_dir: Where the files went.
        predictions_file: ``predictions.json``.
        classes: Class names, in probability order.
        images: One result per input, in input order.
        seconds: Wall-clock time.
    """

    output_dir: Path
    predictions_file: Path
    classes: tuple[str, ...]
    images: list[ImageResult]
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("ok", "no_face", "error"), 0)
        for image in self.images:
            counts[image.status] += 1
        counts["faces"] = sum(len(image.faces) for image in self.images)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The ``predictions.json`` document: classes, counts, and per image path, status,
        message, size, annotated file and faces (box, label, confidence, probabilities, chart)."""
        return {
            "classes": list(self.classes),
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "images": [image.to_dict(self.classes) for image in self.images],
        }


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    result: ImageResult
    stem: str
    rgb: np.ndarray | None = None
    crops: list[np.ndarray] = field(default_factory=list)


def analyze_images(
    inputs: Sequence[Path | str],
    predictor: FacePipeline,
    output_dir: Path,
    batch_size: int = 32,
    write_images: bool = True,
    stn: bool = False,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> ImageReport:
    """Find and classify every face in every image; write annotated images, charts and JSON.

    Args:
        inputs: Files, folders and globs (see :func:`expand_inputs`).
        predictor: Detector, crop and classifier (an :class:`~emonext.predict.EmotionPredictor`).
        output_dir: Created if missing; existing files of the same names are replaced.
        batch_size: Images decoded (and faces classified in one call) per batch; a batch also
            ends after :data:`BATCH_PIXELS` decoded pixels.
        write_images: Write the annotated images and charts (False: ``predictions.json`` only).
        stn: Also write each face's STN view (needs a predictor with a checkpoint).
        progress: Show a progress bar on stderr.
        max_pixels: Larger images are refused (decompression bombs) before decoding.

    Returns:
        The report; ``predictions.json`` holds the same as :meth:`ImageReport.to_dict`.

    Raises:
        ValueError: No inputs at all.
    """
    started = time.perf_counter()
    files = expand_inputs(inputs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    classes = tuple(predictor.classes)
    stems: set[str] = set()
    results: list[ImageResult] = []
    batch: list[_Pending] = []
    held_pixels = 0
    logger.info("analysing %d image(s) into %s", len(files), output_dir)
    with tqdm(total=len(files), desc="images", unit="img", disable=not progress, leave=False) as bar:
        for path in files:
            pending = _prepare(path, predictor, _unique_stem(path, stems), max_pixels)
            if not write_images:
                pending.rgb = None  # only the crops are needed
            results.append(pending.result)
            batch.append(pending)
            held_pixels += 0 if pending.rgb is None else pending.rgb.shape[0] * pending.rgb.shape[1]
            if len(batch) >= batch_size or held_pixels >= BATCH_PIXELS:
                _finish(batch, predictor, classes, output_dir, write_images, stn)
                bar.update(len(batch))
                batch, held_pixels = [], 0
        if batch:
            _finish(batch, predictor, classes, output_dir, write_images, stn)
            bar.update(len(batch))
    report = ImageReport(
        output_dir, output_dir / PREDICTIONS_FILE, classes, results, time.perf_counter() - started
    )
    write_json(report.predictions_file, report.to_dict())
    counts = report.counts
    logger.info(
        "%d image(s): %d with faces (%d faces), %d without a face, %d unreadable -> %s",
        len(results),
        counts["ok"],
        counts["faces"],
        counts["no_face"],
        counts["error"],
        report.predictions_file,
    )
    return report


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, number = path.stem or "image", 2
    candidate = stem
    while candidate.lower() in used:
        candidate = f"{stem}-{number}"
        number += 1
    used.add(candidate.lower())
    return candidate


def _prepare(path: Path, predictor: FacePipeline, stem: str, max_pixels: int) -> _Pending:
    """Decode one file and crop its faces (classification happens per batch)."""
    try:
        rgb = decode_color(path, max_pixels)
    except UnusableImage as error:
        message = f"{path}: not a usable image ({error.reason}: {error.detail})"
        logger.warning("%s", message)
        return _Pending(ImageResult(path, "error", message), stem)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    try:
        boxes = predictor.find_faces(gray)
    except (cv2.error, ValueError) as error:  # a degenerate image the cascade rejects
        message = f"{path}: face detection failed ({error})"
        logger.warning("%s", message)
        return _Pending(ImageResult(path, "error", message, width, height), stem)
    if not boxes:
        return _Pending(ImageResult(path, "no_face", f"no face found in {path}", width, height), stem, rgb)
    crops, windows = [], []
    for box in boxes:
        crop, window = predictor.crop(gray, box)
        crops.append(crop)
        windows.append(window)
    faces = [ImageFace(index, window, np.zeros(0)) for index, window in enumerate(windows)]
    return _Pending(ImageResult(path, "ok", "", width, height, faces), stem, rgb, crops)


def _finish(
    batch: list[_Pending],
    predictor: FacePipeline,
    classes: tuple[str, ...],
    output_dir: Path,
    write_images: bool,
    stn: bool,
) -> None:
    """Classify every face of the batch in one call, then write each image's files."""
    crops = [crop for pending in batch for crop in pending.crops]
    probabilities = np.asarray(predictor.classify(crops))
    offset = 0
    for pending in batch:
        for face in pending.result.faces:
            face.probabilities = probabilities[offset]
            offset += 1
        if write_images and pending.rgb is not None:
            _write_outputs(pending, predictor, classes, output_dir, stn)
        pending.rgb, pending.crops = None, []  # release the pixels as soon as they are written


def _write_outputs(
    pending: _Pending, predictor: FacePipeline, classes: tuple[str, ...], output_dir: Path, stn: bool
) -> None:
    result, stem = pending.result, pending.stem
    assert pending.rgb is not None
    bgr = cv2.cvtColor(pending.rgb, cv2.COLOR_RGB2BGR)
    overlays = [FaceOverlay(face.box, face.probabilities) for face in result.faces]
    annotated = draw_faces(bgr, overlays, classes, "bgr", copy=False)
    result.annotated = write_atomically(
        output_dir / f"{stem}.annotated.jpg", encode_image(annotated, ".jpg", JPEG_QUALITY)
    )
    for face, crop in zip(result.faces, pending.crops, strict=True):
        title = f"face {face.index}: {label_text(face.probabilities, classes)}"
        chart = probability_chart(face.probabilities, classes, title=title)
        face.chart = write_atomically(output_dir / f"{stem}.face{face.index}.png", encode_image(chart))
        if stn:
            from emonext.inference.stn import stn_view

            face.stn = write_atomically(
                output_dir / f"{stem}.face{face.index}.stn.png", encode_image(stn_view(predictor, crop))
            )


__all__ = [
    "IMAGE_SUFFIXES",
    "PREDICTIONS_FILE",
    "ImageFace",
    "ImageReport",
    "ImageResult",
    "analyze_images",
    "decode_color",
    "expand_inputs",
]
