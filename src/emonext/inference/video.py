"""Emotions of every face in a video: annotated H.264 with the original sound, CSV, plots, summary.

:func:`analyze_video` streams the file through ffmpeg (:mod:`emonext.inference.ffmpeg`): frames
are decoded one by one (rotation applied, real timestamps), faces are detected every
``infer.detect_every``-th frame and tracked in between (:mod:`emonext.inference.tracking`), the
crops of a few frames are classified in one batch, probabilities are smoothed per face, the
frames are annotated and piped into an H.264 encoder that also copies the input's audio stream
packet for packet. At most a small window of frames is in memory, whatever the video's length.

Outputs, for ``output = DIR/NAME.mp4`` (``NAME`` without a trailing ``.annotated``, say ``BASE``):

* ``NAME.mp4``: the annotated video (H.264, yuv420p, the input's audio copied bit for bit);
* ``BASE.frames.csv``: one row per face per frame: ``time_s, frame, face_id, x, y, w, h``, the
  smoothed probability of each class, ``label``;
* ``BASE.face<ID>.timeline.png``: each face's probabilities over time;
* ``BASE.summary.txt``: each face's emotion changes in words (see :func:`emotion_segments`);
* ``BASE.report.json``: everything in :meth:`VideoReport.to_dict`, stage timings included.

Nothing is half written: the video and the CSV grow in temporary files that are renamed into
place only after the whole video succeeded; on any error (a corrupt frame, a full disk, Ctrl-C,
an exception raised by ``on_progress`` to cancel) they are deleted and earlier outputs of the
same names are left as they were.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from emonext.config import InferConfig
from emonext.fileio import write_atomically, write_json
from emonext.inference.annotate import draw_faces, timeline_png
from emonext.inference.common import FacePipeline, StageTimer
from emonext.inference.ffmpeg import (
    CONTAINERS,
    DecodedFrame,
    FrameReader,
    FrameWriter,
    VideoError,
    VideoInfo,
    probe_video,
)
from emonext.inference.tracking import Observation, StreamAnalyzer

logger = logging.getLogger(__name__)

#: Emotion segments shorter than this (seconds) are merged into a neighbour in the summary: a
#: label that holds for less than half a second is classifier flicker, not a change of mood.
MIN_SEGMENT = 0.5
EN_DASH = "\N{EN DASH}"
#: Frames held for one classification batch are capped by this many bytes of pixels (and by
#: ``infer.batch_size`` faces): small enough for 4K video, large enough to batch the network.
WINDOW_BYTES = 64 * 1024 * 1024
MAX_WINDOW_FRAMES = 16
#: How often ``on_progress`` is called, as a fraction of the video.
PROGRESS_STEP = 0.01


@dataclass(frozen=True)
class Segment:
    """A stretch of time with one emotion (start inclusive, end exclusive, in seconds)."""

    label: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def emotion_segments(
    times: Sequence[float], labels: Sequence[str], frame_duration: float, min_duration: float = MIN_SEGMENT
) -> list[Segment]:
    """Turn per-frame labels into segments, merging flickers.

    Rule: consecutive frames with the same label form a segment lasting until the next
    segment's first frame (the last one until its last frame plus one frame). Then, as long as
    there is a segment shorter than ``min_duration`` and more than one segment, the shortest of
    them is merged into its longer neighbour (the earlier one on a tie), and neighbours with the
    same label are joined. A face seen for less than ``min_duration`` in total keeps one segment.

    Args:
        times: Frame times in seconds, increasing.
        labels: The (smoothed) label of each frame.
        frame_duration: Duration of one frame, for the end of the last segment.
        min_duration: Shortest segment kept on its own.
    """
    if not times:
        return []
    runs: list[list[Any]] = []
    for moment, label in zip(times, labels, strict=True):
        if runs and runs[-1][0] == label:
            continue
        if runs:
            runs[-1][2] = moment
        runs.append([label, moment, moment])
    runs[-1][2] = times[-1] + frame_duration
    segments = [Segment(label, start, end) for label, start, end in runs]
    while len(segments) > 1:
        short = [index for index, segment in enumerate(segments) if segment.duration < min_duration]
        if not short:
            break
        index = min(short, key=lambda position: (segments[position].duration, position))
        before = segments[index - 1] if index > 0 else None
        after = segments[index + 1] if index + 1 < len(segments) else None
        into_before = after is None or (before is not None and before.duration >= after.duration)
        if into_before:
            assert before is not None
            segments[index - 1 : index + 1] = [Segment(before.label, before.start, segments[index].end)]
        else:
            assert after is not None
            segments[index : index + 2] = [Segment(after.label, segments[index].start, after.end)]
        segments = _join_equal(segments)
    return segments


def _join_equal(segments: list[Segment]) -> list[Segment]:
    joined: list[Segment] = []
    for segment in segments:
        if joined and joined[-1].label == segment.label:
            joined[-1] = Segment(segment.label, joined[-1].start, segment.end)
        else:
            joined.append(segment)
    return joined


def clock(seconds: float, precise: bool = False) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour); ``m:ss.s`` when ``precise``."""
    seconds = max(0.0, seconds)
    if precise:
        minutes, rest = divmod(round(seconds, 1), 60)
        return f"{int(minutes)}:{rest:04.1f}"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_segments(face_id: int, segments: Sequence[Segment], precise: bool = False) -> str:
    """``face 1: happy 0:00-0:40, then sad until 1:18, then neutral until 2:03`` (with an en dash)."""
    if not segments:
        return f"face {face_id}: not seen"
    first = segments[0]
    parts = [f"{first.label} {clock(first.start, precise)}{EN_DASH}{clock(first.end, precise)}"]
    parts += [f"then {segment.label} until {clock(segment.end, precise)}" for segment in segments[1:]]
    return f"face {face_id}: " + ", ".join(parts)


@dataclass
class _Series:
    """One face's smoothed probabilities over time, compactly (4 bytes per value)."""

    times: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("f"))

    def add(self, moment: float, probabilities: np.ndarray) -> None:
        self.times.append(moment)
        self.values.extend(probabilities.astype(np.float32).tolist())

    def arrays(self, classes: int) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.times, dtype=np.float64), np.frombuffer(self.values, np.float32).reshape(
            -1, classes
        )


@dataclass
class FaceTimeline:
    """One tracked face over the video.

    Attributes:
        face_id: Its id (as drawn and in the CSV).
        first: Time it was first reported, in seconds.
        last: Time it was last reported.
        frames: Frames it was reported in.
        segments: Its emotions over time, flickers merged.
        dominant: The label with the most time.
        timeline: The plot file.
    """

    face_id: int
    first: float
    last: float
    frames: int
    segments: list[Segment]
    dominant: str
    timeline: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.face_id,
            "first_s": round(self.first, 3),
            "last_s": round(self.last, 3),
            "frames": self.frames,
            "dominant": self.dominant,
            "segments": [
                {"label": item.label, "start_s": round(item.start, 3), "end_s": round(item.end, 3)}
                for item in self.segments
            ],
            "timeline": self.timeline.name if self.timeline else None,
        }


@dataclass
class VideoReport:
    """The outcome of :func:`analyze_video`.

    Attributes:
        input: The source video.
        output: The annotated video.
        csv_file: Per-frame, per-face rows.
        summary_file: The text summary.
        report_file: This report as JSON.
        info: What ffmpeg said about the input.
        frames: Frames decoded and analysed.
        written_frames: Frames in the output (differs from ``frames`` only for variable-rate input).
        rate: Output frame rate.
        faces: Each tracked face's timeline.
        summary: The text summary.
        audio: ``copied`` (bit for bit), ``re-encoded`` (container cannot hold the codec) or ``none``.
        timings: Seconds per stage: ``decode`` (waiting for ffmpeg's frames), ``detect`` (gray
            conversion, Haar cascade, tracking), ``classify`` (crops and network), ``annotate``
            (drawing, CSV rows), ``encode`` (handing frames to x264 and finishing the file),
            ``outputs`` (timeline plots, summary) and ``total`` (wall clock, probing included).
        decode_errors: What ffmpeg reported when not strict.
    """

    input: Path
    output: Path
    csv_file: Path
    summary_file: Path
    report_file: Path
    info: VideoInfo
    frames: int
    written_frames: int
    rate: float
    faces: list[FaceTimeline]
    summary: str
    audio: str
    timings: dict[str, float]
    decode_errors: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    @property
    def fps(self) -> float:
        """Frames analysed per second of wall-clock time, end to end."""
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def timelines(self) -> list[Path]:
        return [face.timeline for face in self.faces if face.timeline is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "csv": str(self.csv_file),
            "summary_file": str(self.summary_file),
            "timelines": [str(path) for path in self.timelines],
            "video": {
                "width": self.info.display_size[0],
                "height": self.info.display_size[1],
                "rotation": self.info.rotation,
                "duration_s": self.info.duration,
                "codec": self.info.codec,
                "audio_codec": self.info.audio_codec,
            },
            "frames": self.frames,
            "written_frames": self.written_frames,
            "rate": round(self.rate, 4),
            "audio": self.audio,
            "fps": round(self.fps, 2),
            "timings": self.timings,
            "faces": [face.to_dict() for face in self.faces],
            "summary": self.summary,
            "decode_errors": self.decode_errors,
        }


def output_base(output: Path) -> Path:
    """``DIR/clip.annotated.mp4`` -> ``DIR/clip`` (sidecar files are ``DIR/clip.<kind>``)."""
    name = output.name[: -len(output.suffix)] if output.suffix else output.name
    return output.with_name(name.removesuffix(".annotated") or name)


def default_output(input_path: Path, output_dir: Path) -> Path:
    """``<output_dir>/<input stem>.annotated.mp4``."""
    return Path(output_dir) / f"{Path(input_path).stem}.annotated.mp4"


def analyze_video(
    input: Path,
    output: Path,
    predictor: FacePipeline,
    config: InferConfig,
    progress: bool = True,
    on_progress: Callable[[float], None] | None = None,
    strict: bool = True,
) -> VideoReport:
    """Annotate every face's emotion in a video and write the video, CSV, plots and summary.

    Args:
        input: The video (anything ffmpeg reads; rotation metadata is applied).
        output: The annotated video (``.mp4``, ``.m4v``, ``.mov`` or ``.mkv``); sidecar files go
            next to it (see the module docstring).
        predictor: Detector, crop and classifier (an :class:`~emonext.predict.EmotionPredictor`).
        config: ``detect_every``, ``track_iou``, ``track_max_missing``, ``smoothing`` and
            ``batch_size`` (faces per classifier call).
        progress: Show a progress bar on stderr.
        on_progress: Called with the fraction done (0-1) about every 1%; raise from it to cancel
            (nothing is written then).
        strict: Fail on any decoding error (corrupt or truncated data); False conceals damaged
            frames and lists ffmpeg's complaints in the report.

    Returns:
        The report (also written as ``BASE.report.json``).

    Raises:
        VideoError: The input is missing, not a video, corrupt or truncated, or encoding failed
            (a ``ValueError``; the message names the file).
        ValueError: The output would overwrite the input or has an unsupported suffix.
    """
    started = time.perf_counter()
    input, output = Path(input), Path(output)
    info = probe_video(input)
    if output.suffix.lower() not in CONTAINERS:
        raise ValueError(
            f"{output}: unsupported video type {output.suffix!r}; use one of {', '.join(CONTAINERS)}"
        )
    if output.exists() and output.resolve() == input.resolve():
        raise ValueError(f"{output}: the output would overwrite the input video")
    output.parent.mkdir(parents=True, exist_ok=True)
    base = output_base(output)
    classes = tuple(predictor.classes)
    timer = StageTimer()
    analyzer = StreamAnalyzer(predictor, config, timer)
    reader = FrameReader(input, strict=strict)
    rate = info.frame_rate
    video_temp = _temporary(output, suffix=output.suffix)
    csv_temp = _temporary(base.with_name(base.name + ".frames.csv"))
    writer: FrameWriter | None = None
    series: dict[int, _Series] = {}
    window: list[tuple[DecodedFrame, Observation]] = []
    window_frames = MAX_WINDOW_FRAMES
    reported = 0.0
    duration = info.duration or 0.0
    logger.info(
        "%s: %dx%d, %s, %.2f fps, audio %s -> %s",
        input,
        *info.display_size,
        f"{duration:.1f} s" if info.duration else "unknown length",
        rate,
        info.audio_codec or "none",
        output,
    )
    bar = tqdm(total=info.expected_frames, desc="video", unit="frame", disable=not progress, leave=False)
    try:
        with csv_temp.open("w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["time_s", "frame", "face_id", "x", "y", "w", "h", *classes, "label"])

            def flush() -> None:
                if not window:
                    return
                for (frame, observation), probabilities in zip(
                    window, analyzer.classify([item for _, item in window]), strict=True
                ):
                    faces = analyzer.resolve(observation, probabilities)
                    with timer.time("annotate"):
                        image = frame.image
                        if faces:
                            draw_faces(image, [face.overlay() for face in faces], classes, "bgr", copy=False)
                        for face in faces:
                            box = face.box
                            rows.writerow(
                                [
                                    f"{frame.time:.4f}",
                                    frame.index,
                                    face.face_id,
                                    box.x,
                                    box.y,
                                    box.width,
                                    box.height,
                                ]
                                + [f"{value:.4f}" for value in face.probabilities]
                                + [classes[int(np.argmax(face.probabilities))]]
                            )
                            series.setdefault(face.face_id, _Series()).add(frame.time, face.probabilities)
                        assert writer is not None
                        if image.shape[:2] != (writer.height, writer.width):  # resolution change mid-stream
                            image = cv2.resize(
                                image, (writer.width, writer.height), interpolation=cv2.INTER_AREA
                            )
                    writer.write_at(image, frame.time)
                window.clear()

            for frame in reader:
                if writer is None:
                    height, width = frame.image.shape[:2]
                    window_frames = max(1, min(MAX_WINDOW_FRAMES, WINDOW_BYTES // frame.image.nbytes))
                    writer = FrameWriter(
                        video_temp,
                        width,
                        height,
                        rate,
                        audio_from=input if info.has_audio else None,
                        audio_codec=info.audio_codec,
                        sar=frame.sar,
                    )
                observation = analyzer.observe(frame.image)
                window.append((frame, observation))
                if (
                    len(window) >= window_frames
                    or sum(len(item.crops) for _, item in window) >= config.batch_size
                ):
                    flush()
                bar.update(1)
                if on_progress is not None and duration > 0:
                    fraction = min(0.99, max(0.0, frame.time / duration))
                    if fraction - reported >= PROGRESS_STEP:
                        reported = fraction
                        on_progress(fraction)
            flush()
        assert writer is not None  # the reader raises when there is no frame
        writer.close()
        timer.add("decode", reader.decode_seconds)
        timer.add("encode", writer.encode_seconds)
        outputs_started = time.perf_counter()
        faces = _timelines(series, classes, base, frame_duration=1.0 / rate)
        summary = _summary_text(input, info, faces, duration < 60)
        os.replace(csv_temp, base.with_name(base.name + ".frames.csv"))
        os.replace(video_temp, output)
    except BaseException:
        if writer is not None:
            writer.abort()
        video_temp.unlink(missing_ok=True)
        csv_temp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    summary_file = write_atomically(base.with_name(base.name + ".summary.txt"), summary + "\n")
    timings = timer.to_dict()
    timings["outputs"] = round(time.perf_counter() - outputs_started, 4)
    timings["total"] = round(time.perf_counter() - started, 4)
    report = VideoReport(
        input=input,
        output=output,
        csv_file=base.with_name(base.name + ".frames.csv"),
        summary_file=summary_file,
        report_file=base.with_name(base.name + ".report.json"),
        info=info,
        frames=reader.frames,
        written_frames=writer.written,
        rate=rate,
        faces=faces,
        summary=summary,
        audio=("copied" if writer.audio_copied else "re-encoded") if info.has_audio else "none",
        timings=timings,
        decode_errors=list(reader.errors),
    )
    write_json(report.report_file, report.to_dict())
    if on_progress is not None:
        on_progress(1.0)
    logger.info(
        "%d frames in %.1f s (%.1f fps), %d face(s) -> %s",
        report.frames,
        report.seconds,
        report.fps,
        len(faces),
        output,
    )
    return report


def _temporary(path: Path, suffix: str = ".tmp") -> Path:
    """A new hidden temporary file next to ``path`` (same file system: the rename is atomic)."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(descriptor)
    return Path(name)


def _timelines(
    series: dict[int, _Series], classes: tuple[str, ...], base: Path, frame_duration: float
) -> list[FaceTimeline]:
    faces: list[FaceTimeline] = []
    for face_id in sorted(series):
        times, values = series[face_id].arrays(len(classes))
        labels = [classes[index] for index in values.argmax(axis=1)]
        segments = emotion_segments(times.tolist(), labels, frame_duration)
        totals: dict[str, float] = {}
        for segment in segments:
            totals[segment.label] = totals.get(segment.label, 0.0) + segment.duration
        plot = timeline_png(times, values, classes, f"face {face_id}")
        path = write_atomically(base.with_name(f"{base.name}.face{face_id}.timeline.png"), plot)
        faces.append(
            FaceTimeline(
                face_id=face_id,
                first=float(times[0]),
                last=float(times[-1]),
                frames=len(times),
                segments=segments,
                dominant=max(totals, key=lambda label: totals[label]),
                timeline=path,
            )
        )
    return faces


def _summary_text(input: Path, info: VideoInfo, faces: Sequence[FaceTimeline], precise: bool) -> str:
    length = clock(info.duration, precise) if info.duration else "unknown length"
    lines = [f"{input.name} ({length}): {len(faces)} face(s)"]
    lines += [describe_segments(face.face_id, face.segments, precise) for face in faces]
    if not faces:
        lines.append("no face was found")
    return "\n".join(lines)


__all__ = [
    "MIN_SEGMENT",
    "FaceTimeline",
    "Segment",
    "VideoError",
    "VideoReport",
    "analyze_video",
    "clock",
    "default_output",
    "describe_segments",
    "emotion_segments",
    "output_base",
]
