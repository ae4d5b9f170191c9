"""Live emotions from a camera, a stream URL or a video file read as if it were a camera.

:func:`run_webcam` reads frames with OpenCV's ``VideoCapture`` (a device index such as ``0``, an
``rtsp://``/``http://`` URL, or a file, which is how tests stand in for a camera), tracks and
classifies faces frame by frame with :class:`~emonext.inference.tracking.StreamAnalyzer` (detect
every ``infer.detect_every``-th frame, classify every frame, smooth per face), and either shows
the annotated frames in a window with the measured fps, or, with ``headless``, writes one JSON
line per frame. It never buffers: each frame is processed as soon as it is read, so latency
stays at one frame.

This package installs ``opencv-python-headless``, which has no GUI backend: a window cannot
open. The windowed mode then fails up front with a message pointing to ``--headless`` or to the
webcam tab of ``emonext ui`` (the browser captures the camera there).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import cv2
import numpy as np

from emonext.config import InferConfig
from emonext.inference.annotate import draw_faces, draw_status
from emonext.inference.common import FacePipeline
from emonext.inference.tracking import StreamAnalyzer, TrackedFace

logger = logging.getLogger(__name__)

WINDOW_TITLE = "emonext (press q to quit)"
#: Weight of the past in the displayed fps (an exponential moving average of frame rates).
FPS_SMOOTHING = 0.9

StopReason = Literal["max_frames", "end_of_stream", "interrupted", "quit", "callback"]


class CameraError(RuntimeError):
    """A camera or stream cannot be opened, or a preview window cannot be shown."""


@dataclass(frozen=True)
class LiveFrame:
    """One processed frame, as handed to ``on_frame``.

    Attributes:
        index: Frame number from 0.
        time: Seconds since the stream was opened (wall clock).
        fps: Smoothed processing rate, frames per second.
        faces: Confirmed faces with ids and smoothed probabilities.
        image: The annotated frame, uint8 BGR.
        classes: Class names, in probability order.
    """

    index: int
    time: float
    fps: float
    faces: list[TrackedFace]
    image: np.ndarray
    classes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON line of ``--headless``: frame, time, fps and faces (id, box, label, probabilities)."""
        return {
            "frame": self.index,
            "time": round(self.time, 3),
            "fps": round(self.fps, 2),
            "faces": [face.to_dict(self.classes) for face in self.faces],
        }


@dataclass
class WebcamReport:
    """How a live session ended.

    Attributes:
        source: The device index or URL.
        frames: Frames processed.
        seconds: Wall-clock duration.
        stopped: Why it stopped.
        face_ids: Every face id seen.
        timings: Seconds per stage (decode = reading frames from the camera).
    """

    source: int | str
    frames: int
    seconds: float
    stopped: StopReason
    face_ids: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "stopped": self.stopped,
            "face_ids": self.face_ids,
            "timings": self.timings,
        }


def parse_source(source: int | str | Path) -> int | str:
    """``"0"`` -> ``0`` (a device index); anything else (URL, file) becomes a string."""
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return source


def gui_available() -> bool:
    """Whether this OpenCV build can open windows (``opencv-python-headless`` cannot)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "NO", "")
    return False


def require_gui() -> None:
    """Fail with advice when no preview window can open.

    Raises:
        CameraError: This OpenCV build has no GUI backend.
    """
    if not gui_available():
        raise CameraError(
            "this OpenCV build has no GUI backend (opencv-python-headless), so no preview window can "
            "open: use --headless (one JSON line per frame on stdout) or the webcam tab of `emonext ui`"
        )


def open_capture(source: int | str | Path) -> cv2.VideoCapture:
    """Open a camera index, URL or video file.

    Raises:
        CameraError: Nothing can be opened there (the message names the device or URL).
    """
    source = parse_source(source)
    capture = cv2.VideoCapture(source)
    if capture.isOpened():
        return capture
    capture.release()
    if isinstance(source, int):
        raise CameraError(
            f"no camera at device {source}: OpenCV could not open it (is a camera connected, and is "
            f"/dev/video{source} readable by this user?); pass another index, a stream URL or a video "
            "file with --device"
        )
    if "://" not in source and not Path(source).exists():
        raise CameraError(f"cannot open video source {source!r}: no such file, and not a stream URL")
    raise CameraError(f"cannot open video source {source!r}: OpenCV could not read it")


def run_webcam(
    source: int | str | Path,
    predictor: FacePipeline,
    config: InferConfig,
    headless: bool,
    max_frames: int | None = None,
    on_frame: Callable[[LiveFrame], bool | None] | None = None,
    stream: TextIO | None = None,
) -> WebcamReport:
    """Analyse a live stream until it ends, ``max_frames``, Ctrl-C, ``q`` or ``on_frame`` stops it.

    Args:
        source: Camera index (``0`` or ``"0"``), stream URL or video file.
        predictor: Detector, crop and classifier.
        config: Tracking and smoothing settings (``detect_every``, ``track_iou``...).
        headless: No window: write one JSON line per frame to ``stream`` (see
            :meth:`LiveFrame.to_dict`).
        max_frames: Stop after this many frames; None for no limit.
        on_frame: Called with every processed frame; returning False stops.
        stream: Where headless JSON lines go; None for ``sys.stdout`` (resolved at call time).

    Returns:
        The session's report. Ctrl-C ends the session cleanly (``stopped="interrupted"``).

    Raises:
        CameraError: The source cannot be opened, or a window is wanted but OpenCV has no GUI.
    """
    if not headless:
        require_gui()
    source = parse_source(source)
    capture = open_capture(source)
    out = stream if stream is not None else sys.stdout
    analyzer = StreamAnalyzer(predictor, config)
    classes = tuple(predictor.classes)
    seen: set[int] = set()
    frames, fps = 0, 0.0
    stopped: StopReason = "end_of_stream"
    started = last = time.perf_counter()
    window_open = False
    try:
        while max_frames is None or frames < max_frames:
            with analyzer.timer.time("decode"):
                ok, image = capture.read()
            if not ok or image is None:
                if isinstance(source, int):
                    logger.warning("camera %s stopped delivering frames", source)
                break
            faces, _ = analyzer.process(image)
            now = time.perf_counter()
            instant = 1.0 / max(now - last, 1e-6)
            fps = instant if frames == 0 else FPS_SMOOTHING * fps + (1 - FPS_SMOOTHING) * instant
            last = now
            with analyzer.timer.time("annotate"):
                drawn = draw_faces(image, [face.overlay() for face in faces], classes, "bgr", copy=False)
                draw_status(drawn, f"{fps:.1f} fps")
            frame = LiveFrame(frames, now - started, fps, faces, drawn, classes)
            frames += 1
            seen.update(face.face_id for face in faces)
            if headless:
                out.write(json.dumps(frame.to_dict()) + "\n")
                out.flush()
            else:
                cv2.imshow(WINDOW_TITLE, drawn)
                window_open = True
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stopped = "quit"
                    break
            if on_frame is not None and on_frame(frame) is False:
                stopped = "callback"
                break
        else:
            stopped = "max_frames"
    except KeyboardInterrupt:
        stopped = "interrupted"
        logger.info("interrupted after %d frame(s)", frames)
    finally:
        capture.release()
        if window_open:
            cv2.destroyAllWindows()
    report = WebcamReport(
        source=source,
        frames=frames,
        seconds=time.perf_counter() - started,
        stopped=stopped,
        face_ids=sorted(seen),
        timings=analyzer.timer.to_dict(),
    )
    logger.info("%d frame(s) in %.1f s (%.1f fps), stopped: %s", frames, report.seconds, report.fps, stopped)
    return report


__all__ = [
    "CameraError",
    "LiveFrame",
    "WebcamReport",
    "gui_available",
    "open_capture",
    "parse_source",
    "require_gui",
    "run_webcam",
]
