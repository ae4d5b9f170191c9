"""What the three tabs run: photos through ``analyze_images``, webcam frames through a per-tab
``StreamAnalyzer``, videos through ``analyze_video``; each turned into the JSON the page reads.

The GUI adds no analysis of its own: a photo analysed here gives the same files and numbers as
``emonext predict`` (annotated image, per-face chart and STN view), and webcam frames are tracked
and smoothed exactly as video frames are (``infer.detect_every``, ``track_iou``, ``smoothing``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emonext.cleaning.pipeline import UnusableImage, decode_gray
from emonext.config import InferConfig
from emonext.fileio import write_json
from emonext.inference.common import FacePipeline
from emonext.inference.image import analyze_images
from emonext.inference.stn import has_stn
from emonext.inference.tracking import StreamAnalyzer
from emonext.ui.uploads import Upload, UploadError

logger = logging.getLogger(__name__)

#: ``<path>: not a usable image (<reason>: <detail>)``, as ``analyze_images`` reports bad files.
_UNUSABLE = re.compile(r"not a usable image \((?P<reason>\w+): (?P<detail>.*)\)$", re.DOTALL)

#: Maps a result file to its ``/results/...`` URL.
UrlOf = Callable[[Path], str]


def safe_stem(filename: str) -> str:
    """A file-name stem made of letters, digits, ``-`` and ``_`` (outputs are named after it)."""
    stem = Path(filename).stem
    cleaned = "".join(char if char.isalnum() or char in "-_" else "_" for char in stem)[:60]
    return cleaned or "image"


def unreadable_image(filename: str, reason: str, detail: str) -> UploadError:
    """The 400 answer for an image that cannot be decoded, naming the user's file."""
    why = "it has too many pixels" if reason == "too_large" else "it is damaged, truncated or not an image"
    return UploadError(400, f"{filename} could not be read as an image: {why} ({detail}).")


def analyze_photo(
    upload: Upload, predictor: FacePipeline, output_dir: Path, model: dict[str, Any], url_of: UrlOf
) -> dict[str, Any]:
    """Every face of an uploaded photo, with its annotated picture, charts and STN views.

    Args:
        upload: The received file (already checked to be an image).
        predictor: The model (the caller holds the model lock).
        output_dir: A fresh results folder for this photo.
        model: What the page says about the model (stored with the results).
        url_of: Result file -> URL.

    Returns:
        ``file``, ``width``, ``height``, ``faces`` (box, label, confidence, probabilities,
        ``chart_url``, and ``stn_url`` when the model has an STN), ``annotated_url``, ``json_url``,
        ``message``, ``seconds``.

    Raises:
        UploadError: 400 when the file cannot be decoded.
    """
    started = time.perf_counter()
    # The input gets the user's (sanitised) name: ``analyze_images`` names its outputs after it.
    folder = upload.path.parent / uuid.uuid4().hex
    folder.mkdir()
    source = folder / (safe_stem(upload.filename) + Path(upload.filename).suffix.lower()[:8])
    upload.path.rename(source)
    try:
        # A model without a Spatial Transformer would show the input twice: no STN view then.
        report = analyze_images(
            [source], predictor, output_dir, write_images=True, stn=has_stn(predictor), progress=False
        )
    finally:
        source.unlink(missing_ok=True)
        folder.rmdir()
    result = report.images[0]
    if result.status == "error":
        match = _UNUSABLE.search(result.message)
        reason, detail = (match["reason"], match["detail"]) if match else ("undecodable", result.message)
        raise unreadable_image(upload.filename, reason, detail.replace(str(source), upload.filename))
    classes = report.classes
    faces = []
    for face in result.faces:
        row = face.to_dict(classes)
        row.pop("chart", None)
        row.pop("stn", None)
        if face.chart is not None:
            row["chart_url"] = url_of(face.chart)
        if face.stn is not None:
            row["stn_url"] = url_of(face.stn)
        faces.append(row)
    document: dict[str, Any] = {
        "file": upload.filename,
        "width": result.width,
        "height": result.height,
        "faces": faces,
        "message": "" if faces else f"No face was found in {upload.filename}.",
    }
    # A download without server paths or URLs: the user's file name, the model, the faces.
    plain = [{key: value for key, value in face.items() if not key.endswith("_url")} for face in faces]
    saved = write_json(
        output_dir / f"{source.stem}.faces.json",
        {"file": upload.filename, "model": model, "classes": list(classes), "faces": plain},
    )
    if result.annotated is not None:
        document["annotated_url"] = url_of(result.annotated)
    document["json_url"] = url_of(saved)
    document["seconds"] = round(time.perf_counter() - started, 3)
    return document


class WebcamSessions:
    """One :class:`StreamAnalyzer` per open webcam tab, so each keeps its own face ids and smoothing.

    Tabs are told apart by a random id the page sends with every frame; a tab that stops sending
    is forgotten after ``idle_seconds`` (closing a tab sends nothing), and at most ``max_sessions``
    are kept.

    Args:
        predictor: The model (every call is made under the caller's model lock).
        config: Tracking and smoothing settings.
        idle_seconds: Forget a session after this long without a frame.
        max_sessions: Most sessions kept; the least recently used goes first.
    """

    def __init__(
        self, predictor: FacePipeline, config: InferConfig, idle_seconds: float = 120, max_sessions: int = 16
    ) -> None:
        self._predictor = predictor
        self._config = config
        self._idle = idle_seconds
        self._max = max_sessions
        self._sessions: OrderedDict[str, tuple[StreamAnalyzer, float]] = OrderedDict()
        self._lock = threading.Lock()

    def analyzer(self, session: str) -> StreamAnalyzer:
        """The session's analyser (a new one for a new id)."""
        now = time.monotonic()
        with self._lock:
            for key in [key for key, (_, used) in self._sessions.items() if now - used > self._idle]:
                del self._sessions[key]
            known = self._sessions.pop(session, None)
            analyzer = known[0] if known else StreamAnalyzer(self._predictor, self._config)
            self._sessions[session] = (analyzer, now)  # moved to the end: most recently used
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
            return analyzer

    def __len__(self) -> int:
        return len(self._sessions)


def analyze_frame(
    data: bytes, filename: str, predictor: FacePipeline, analyzer: StreamAnalyzer | None
) -> dict[str, Any]:
    """The faces in one webcam frame.

    Args:
        data: The encoded frame (JPEG from the page's canvas).
        filename: Its name, for messages.
        predictor: The model (the caller holds the model lock).
        analyzer: The tab's tracker (ids, smoothing, detection every ``detect_every`` frames);
            None analyses the frame on its own (every face, no ids).

    Returns:
        ``faces`` (``id`` when tracked, box, label, confidence, probabilities), the frame's
        ``width`` and ``height``, and ``seconds``.

    Raises:
        UploadError: 400 when the frame cannot be decoded.
    """
    started = time.perf_counter()
    try:
        gray = decode_gray(data).gray
    except UnusableImage as error:
        raise unreadable_image(filename, error.reason, error.detail) from None
    if analyzer is None:
        rows = predictor.predict([gray])  # type: ignore[attr-defined]
        faces = [row.to_dict(predictor.classes) for row in rows if row.status == "face"]
        for face in faces:
            face.pop("image", None)
            face.pop("status", None)
    else:
        tracked, _ = analyzer.process(gray)
        faces = [face.to_dict(analyzer.classes) for face in tracked]
    return {
        "faces": faces,
        "width": int(gray.shape[1]),
        "height": int(gray.shape[0]),
        "seconds": round(time.perf_counter() - started, 4),
    }
