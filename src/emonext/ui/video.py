"""The video tab's job: ``analyze_video`` on an upload, its outputs as URLs for the page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from emonext.config import InferConfig
from emonext.inference.common import FacePipeline
from emonext.inference.video import analyze_video, default_output
from emonext.ui.jobs import Job


def run_video(
    job: Job,
    predictor: FacePipeline,
    config: InferConfig,
    on_progress: Callable[[float], None],
    url_of: Callable[[Path], str],
) -> dict[str, Any]:
    """Analyse the job's video into its results folder.

    Args:
        job: The job (input file named after the user's file, fresh output folder).
        predictor: The shared model (its calls are serialised with the other tabs).
        config: The ``infer`` section (tracking, smoothing, batch size).
        on_progress: Called with the fraction done; raises to cancel.
        url_of: Result file -> URL.

    Returns:
        ``video_url``, ``csv_url``, ``summary_url``, ``report_url``, ``summary`` (text),
        ``timelines`` (``name``, ``url``, ``dominant`` per face), ``frames``, ``fps``,
        ``seconds``, ``audio`` and ``warnings``.

    Raises:
        VideoError: The upload is not a readable video (the message names it).
    """
    output = default_output(job.input_path, job.output_dir)
    # Not strict: a phone video with a few damaged packets still gives a result (the damaged
    # frames are concealed and the page says so) instead of nothing.
    report = analyze_video(
        job.input_path, output, predictor, config, progress=False, on_progress=on_progress, strict=False
    )
    warnings = []
    if report.decode_errors:
        warnings.append(
            f"{job.filename} is partly damaged: ffmpeg reported {len(report.decode_errors)} problem(s) "
            "and concealed the damaged frames."
        )
    if report.audio == "re-encoded":
        warnings.append("The sound was re-encoded (the MP4 container cannot hold the original codec).")
    return {
        "video_url": url_of(report.output),
        "csv_url": url_of(report.csv_file),
        "summary_url": url_of(report.summary_file),
        "report_url": url_of(report.report_file),
        "summary": report.summary,
        "timelines": [
            {"name": f"face {face.face_id}", "url": url_of(face.timeline), "dominant": face.dominant}
            for face in report.faces
            if face.timeline is not None
        ],
        "frames": report.frames,
        "fps": round(report.fps, 2),
        "seconds": round(report.seconds, 2),
        "audio": report.audio,
        "warnings": warnings,
    }
