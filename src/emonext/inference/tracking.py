"""Stable face ids over video frames: IoU tracking, sparse detection, smoothed probabilities.

Why this design (Haar detection costs ~35 ms per 600x340 frame on the 2-core machine, the
classifier ~2-4 ms per face when batched):

* **Detect every k-th frame** (``infer.detect_every``). In between, each track keeps the box of
  its last detection (no motion model: faces in talking-head footage move little in k frames,
  and a wrong extrapolation is worse than a box that lags by a frame or two).
* **Classify every frame**, at the tracked boxes. Batched, the classifier costs a fraction of one
  detection, and the per-face smoothing then sees every frame, so labels react within a few
  frames instead of k times that. (Detection, not classification, is what ``detect_every``
  saves.)
* **Associate by IoU** (``infer.track_iou``): optimal assignment (Hungarian, SciPy's
  ``linear_sum_assignment``) when SciPy is installed, greedy best-IoU-first otherwise; with a
  handful of faces both give the same pairs.
* **Confirm before showing**: a track gets a public id (1, 2, ... in order of confirmation) at
  its :data:`MIN_HITS`-th matched detection; an unconfirmed track that misses its next detection
  is dropped at once. One-frame Haar false positives therefore never get an id nor a CSV row.
* **End after ``infer.track_max_missing`` frames** without a matching detection (checked on
  detection frames, the only frames where a face can be re-found), so a face the cascade misses
  for a moment (a turned head, a blink of motion blur) keeps its id.
* **Smooth per track**: an exponential moving average of the probabilities,
  ``p = w * p_previous + (1 - w) * p_frame`` with ``w = infer.smoothing`` (0 = off), which
  removes the frame-to-frame flicker of a single-frame classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from emonext.cleaning.faces import Box
from emonext.config import InferConfig
from emonext.inference.annotate import FaceOverlay, draw_faces
from emonext.inference.common import FacePipeline, StageTimer, box_dict, probabilities_dict

logger = logging.getLogger(__name__)

#: Matched detections needed before a track is shown and gets an id.
MIN_HITS = 2

try:  # optional: SciPy's Hungarian solver; greedy matching is the fallback
    from scipy.optimize import linear_sum_assignment as _hungarian
except ImportError:  # pragma: no cover - SciPy is present in the development environment
    _hungarian = None


@dataclass(eq=False)
class Track:
    """One face followed over frames.

    Attributes:
        key: Internal number (every track has one, confirmed or not).
        box: The face box of its last matched detection.
        first_frame: Frame the track started at.
        last_detected: Last frame a detection matched it.
        hits: Matched detections so far.
        face_id: Public id, assigned on confirmation; None before.
        smoothed: Exponential moving average of its probabilities; None before the first.
    """

    key: int
    box: Box
    first_frame: int
    last_detected: int
    hits: int = 1
    face_id: int | None = None
    smoothed: np.ndarray | None = field(default=None, repr=False)

    def smooth(self, probabilities: np.ndarray, weight: float) -> np.ndarray:
        """Fold this frame's probabilities into the moving average and return it."""
        current = np.asarray(probabilities, dtype=np.float32)
        if self.smoothed is None or weight <= 0.0:
            self.smoothed = current.copy()
        else:
            self.smoothed = weight * self.smoothed + (1.0 - weight) * current
        return self.smoothed


def iou_matrix(first: Sequence[Box], second: Sequence[Box]) -> np.ndarray:
    """Pairwise intersection over union, shape (len(first), len(second))."""
    return np.array([[a.iou(b) for b in second] for a in first], dtype=np.float64).reshape(
        len(first), len(second)
    )


def match_boxes(tracks: Sequence[Box], detections: Sequence[Box], threshold: float) -> list[tuple[int, int]]:
    """Pair tracks with detections overlapping by at least ``threshold`` IoU.

    Returns:
        (track index, detection index) pairs; each index appears at most once.
    """
    if not tracks or not detections:
        return []
    overlap = iou_matrix(tracks, detections)
    overlap[overlap < threshold] = 0.0  # never trade a valid pair for an invalid one
    if _hungarian is not None:
        rows, columns = _hungarian(overlap, maximize=True)
        pairs = zip(rows.tolist(), columns.tolist(), strict=True)
        return [(row, column) for row, column in pairs if overlap[row, column] > 0.0]
    pairs: list[tuple[int, int]] = []
    used_rows: set[int] = set()
    used_columns: set[int] = set()
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        row, column = divmod(int(flat), overlap.shape[1])
        if overlap[row, column] <= 0.0:
            break
        if row not in used_rows and column not in used_columns:
            pairs.append((row, column))
            used_rows.add(row)
            used_columns.add(column)
    return pairs


class IouTracker:
    """Greedy/Hungarian IoU tracker with confirmation and a miss budget.

    Args:
        iou_threshold: Least IoU between a track's box and a detection to continue the track.
        max_missing: Frames a track survives without a matching detection.
        min_hits: Matched detections before a track is confirmed (gets an id).
    """

    def __init__(self, iou_threshold: float, max_missing: int, min_hits: int = MIN_HITS) -> None:
        self.iou_threshold = iou_threshold
        self.max_missing = max_missing
        self.min_hits = max(1, min_hits)
        self.tracks: list[Track] = []
        self._next_key = 0
        self._next_id = 1

    def update(self, frame: int, detections: Sequence[Box] | None) -> list[Track]:
        """Advance to ``frame``; ``detections`` is None on frames without detection.

        Returns:
            The live tracks (confirmed or not), oldest first.
        """
        if detections is None:
            return list(self.tracks)
        pairs = match_boxes([track.box for track in self.tracks], detections, self.iou_threshold)
        matched_tracks = {row for row, _ in pairs}
        matched_detections = {column for _, column in pairs}
        for row, column in pairs:
            track = self.tracks[row]
            track.box = detections[column]
            track.last_detected = frame
            track.hits += 1
        survivors: list[Track] = []
        for index, track in enumerate(self.tracks):
            if index not in matched_tracks:
                if track.face_id is None:
                    continue  # unconfirmed and missed: a false positive, most likely
                if frame - track.last_detected > self.max_missing:
                    logger.debug("face %d left at frame %d", track.face_id, frame)
                    continue
            survivors.append(track)
        for column, box in enumerate(detections):
            if column not in matched_detections:
                survivors.append(Track(self._next_key, box, frame, frame))
                self._next_key += 1
        for track in survivors:
            if track.face_id is None and track.hits >= self.min_hits:
                track.face_id = self._next_id
                self._next_id += 1
        self.tracks = survivors
        return list(self.tracks)

    def reset(self) -> None:
        """Forget every track (ids start again at 1)."""
        self.tracks = []
        self._next_key = 0
        self._next_id = 1


@dataclass(frozen=True)
class TrackedFace:
    """A confirmed face in one frame.

    Attributes:
        face_id: Stable id over the video (1, 2, ...).
        box: The window the model saw (face box plus the training margin), in frame pixels.
        probabilities: Smoothed class probabilities.
        raw: This frame's unsmoothed probabilities.
        missing: Frames since a detection last matched the face (0 on a matched detection
            frame).
    """

    face_id: int
    box: Box
    probabilities: np.ndarray
    raw: np.ndarray
    missing: int

    def overlay(self) -> FaceOverlay:
        return FaceOverlay(self.box, self.probabilities, self.face_id)

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        """``id``, ``box``, ``label``, ``confidence`` and ``probabilities`` (smoothed) as JSON."""
        return {
            "id": self.face_id,
            "box": box_dict(self.box),
            **probabilities_dict(self.probabilities, classes),
        }


@dataclass
class Observation:
    """One frame after detection and tracking, before classification.

    Attributes:
        frame: The analyser's frame counter.
        tracks: Live tracks at this frame.
        face_ids: Each track's id at this frame (None: not confirmed yet, not reported).
        windows: The crop window of each track.
        crops: Model-sized faces, one per track.
        missing: Frames since each track's last matched detection.
    """

    frame: int
    tracks: list[Track]
    face_ids: list[int | None]
    windows: list[Box]
    crops: list[np.ndarray]
    missing: list[int]


class StreamAnalyzer:
    """Frame-by-frame face tracking and emotion classification, for videos and live streams.

    :meth:`observe` (detect or track, crop) and :meth:`resolve` (smooth, report) are separate so
    a video can classify the crops of several frames in one batch; :meth:`process` does both for
    one frame (webcam, GUI frames).

    Args:
        predictor: Detector, crop and classifier.
        config: ``detect_every``, ``track_iou``, ``track_max_missing`` and ``smoothing``.
        timer: Where detect/classify/annotate times are added; a new one when None.
    """

    def __init__(self, predictor: FacePipeline, config: InferConfig, timer: StageTimer | None = None) -> None:
        self.predictor = predictor
        self.classes = tuple(predictor.classes)
        self.config = config
        self.timer = timer or StageTimer()
        self.tracker = IouTracker(config.track_iou, config.track_max_missing)
        self.frames = 0

    def observe(self, frame: np.ndarray) -> Observation:
        """Detect (every ``detect_every``-th call) or keep the tracked boxes, then crop the faces.

        Args:
            frame: uint8 BGR (H, W, 3) or grayscale (H, W).
        """
        index = self.frames
        self.frames += 1
        with self.timer.time("detect"):
            gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            detections = self.predictor.find_faces(gray) if index % self.config.detect_every == 0 else None
            tracks = self.tracker.update(index, detections)
        with self.timer.time("classify"):
            cropped = [self.predictor.crop(gray, track.box) for track in tracks]
        return Observation(
            frame=index,
            tracks=tracks,
            face_ids=[track.face_id for track in tracks],
            windows=[window for _, window in cropped],
            crops=[crop for crop, _ in cropped],
            missing=[index - track.last_detected for track in tracks],
        )

    def classify(self, observations: Sequence[Observation]) -> list[np.ndarray]:
        """Classify the crops of several frames in one call; one (faces, C) array per frame."""
        crops = [crop for observation in observations for crop in observation.crops]
        with self.timer.time("classify"):
            probabilities = self.predictor.classify(crops)
        counts = np.cumsum([len(observation.crops) for observation in observations])[:-1]
        return list(np.split(np.asarray(probabilities), counts)) if observations else []

    def resolve(self, observation: Observation, probabilities: np.ndarray) -> list[TrackedFace]:
        """Smooth each track's probabilities (in frame order!) and return the confirmed faces."""
        faces: list[TrackedFace] = []
        for track, face_id, window, missing, values in zip(
            observation.tracks,
            observation.face_ids,
            observation.windows,
            observation.missing,
            probabilities,
            strict=True,
        ):
            smoothed = track.smooth(values, self.config.smoothing).copy()
            if face_id is not None:
                faces.append(TrackedFace(face_id, window, smoothed, np.asarray(values, np.float32), missing))
        return sorted(faces, key=lambda face: face.face_id)

    def process(
        self, frame: np.ndarray, annotate: bool = False
    ) -> tuple[list[TrackedFace], np.ndarray | None]:
        """Observe, classify and resolve one frame.

        Args:
            frame: uint8 BGR (H, W, 3) (or grayscale).
            annotate: Also return a copy of the frame with the faces drawn.

        Returns:
            The confirmed faces, and the annotated BGR frame (None unless ``annotate``).
        """
        observation = self.observe(frame)
        (probabilities,) = self.classify([observation])
        faces = self.resolve(observation, probabilities)
        if not annotate:
            return faces, None
        with self.timer.time("annotate"):
            drawn = draw_faces(frame, [face.overlay() for face in faces], self.classes, "bgr", copy=True)
        return faces, drawn

    def reset(self) -> None:
        """Start over (a new video or stream): tracks, ids and the detection rhythm."""
        self.tracker.reset()
        self.frames = 0


__all__ = [
    "MIN_HITS",
    "IouTracker",
    "Observation",
    "StreamAnalyzer",
    "Track",
    "TrackedFace",
    "iou_matrix",
    "match_boxes",
]
