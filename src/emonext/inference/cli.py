"""``emonext predict image|video|webcam``: emotions of the faces in photos, videos and live streams.

Mounted in the main command line as ``emonext predict`` (``app.add_typer(predict_app,
name="predict")`` in :mod:`emonext.cli`). Same conventions as the other commands: results on
stdout (JSON with ``--json``), logs and progress bars on stderr, and user errors (a missing
file, a corrupt video, no camera) as one ``error: ...`` line with exit status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from emonext.cli_common import (
    ParamsOption,
    ProgressOption,
    SetOption,
    VerboseOption,
    print_json,
    reports_errors,
    start,
)
from emonext.config import DEFAULT_PARAMS_FILE
from emonext.inference.common import build_predictor

predict_app = typer.Typer(
    name="predict",
    help="Emotions of the faces in images, videos and a webcam (the model: --model or infer.model).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
logger = logging.getLogger("emonext")


class Backend(StrEnum):
    """Classifier runtime."""

    torch = "torch"
    onnx = "onnx"


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="builtin, models:/emonext@champion, models:/NAME/VERSION, runs:/ID/model or a checkpoint "
        "(default: infer.model, else the registry champion, else the built-in model)",
    ),
]
BackendOption = Annotated[
    Backend | None, typer.Option("--backend", help="classifier runtime (default: infer.backend)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the results as JSON on stdout")]


def _model_info(loaded: Any) -> dict[str, Any]:
    return {"uri": loaded.uri, "version": loaded.version, "path": str(loaded.checkpoint.path)}


@predict_app.command()
@reports_errors
def image(
    paths: Annotated[list[str], typer.Argument(help="image files, folders (searched recursively) or globs")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default: infer.output_dir)")
    ] = None,
    as_json: JsonOption = False,
    stn: Annotated[bool, typer.Option("--stn", help="also write each face's STN-aligned view")] = False,
    images: Annotated[
        bool, typer.Option("--images/--no-images", help="write annotated images and charts")
    ] = True,
    model: ModelOption = None,
    backend: BackendOption = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Find every face in the images and classify its emotion.

    Writes <stem>.annotated.jpg, <stem>.face<i>.png (bar charts) and predictions.json.
    Unreadable files and photos without a face are reported; the batch goes on.
    """
    from emonext.inference.image import analyze_images

    params = start(params_file, overrides, verbose)
    loaded, predictor = build_predictor(params, model, backend.value if backend else None)
    report = analyze_images(
        paths,
        predictor,
        out or params.infer.output_dir,
        batch_size=params.infer.batch_size,
        write_images=images,
        stn=stn,
        progress=progress,
    )
    document = {
        "model": _model_info(loaded),
        **report.to_dict(),
        "predictions_file": str(report.predictions_file),
    }
    if as_json:
        print_json(document)
        return
    for result in report.images:
        if result.status == "ok":
            found = ", ".join(
                f"face {face.index}: {report.classes[int(face.probabilities.argmax())]} "
                f"{float(face.probabilities.max()):.0%}"
                for face in result.faces
            )
            sys.stdout.write(f"{result.path}: {found}\n")
        else:
            sys.stdout.write(f"{result.path}: {result.status}: {result.message}\n")
    sys.stdout.write(f"-> {report.predictions_file}\n")


@predict_app.command()
@reports_errors
def video(
    input: Annotated[Path, typer.Argument(help="video file (rotation metadata is applied)")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="annotated video (.mp4/.mov/.mkv) (default: infer.output_dir/<stem>.annotated.mp4)",
        ),
    ] = None,
    as_json: JsonOption = False,
    lenient: Annotated[
        bool,
        typer.Option(
            "--lenient", help="conceal corrupt frames instead of failing on the first decoding error"
        ),
    ] = False,
    model: ModelOption = None,
    backend: BackendOption = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Annotate every face's emotion in a video (H.264, original audio kept bit for bit).

    Also writes <name>.frames.csv, <name>.face<id>.timeline.png, <name>.summary.txt and <name>.report.json.
    Faces are detected every infer.detect_every frames and tracked in between.
    """
    from emonext.inference.video import analyze_video, default_output

    params = start(params_file, overrides, verbose)
    loaded, predictor = build_predictor(params, model, backend.value if backend else None)
    report = analyze_video(
        input,
        out or default_output(input, params.infer.output_dir),
        predictor,
        params.infer,
        progress=progress,
        strict=not lenient,
    )
    if as_json:
        print_json({"model": _model_info(loaded), **report.to_dict()})
        return
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in report.timings.items())
    sys.stdout.write(
        f"{report.summary}\n"
        f"-> {report.output}\n-> {report.csv_file}\n-> {report.summary_file}\n"
        + "".join(f"-> {path}\n" for path in report.timelines)
        + f"{report.frames} frames at {report.fps:.1f} fps ({timings})\n"
    )


@predict_app.command()
@reports_errors
def webcam(
    device: Annotated[
        str, typer.Option("--device", "-d", help="camera index (0, 1...), stream URL or video file")
    ] = "0",
    headless: Annotated[
        bool, typer.Option("--headless", help="no window: one JSON line per frame on stdout")
    ] = False,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="stop after this many frames")
    ] = None,
    model: ModelOption = None,
    backend: BackendOption = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Live emotions from a camera: a preview window (q quits), or JSON lines with --headless.

    Ctrl-C stops cleanly. Without an OpenCV GUI backend use --headless, or `emonext ui`.
    """
    from emonext.inference.webcam import require_gui, run_webcam

    params = start(params_file, overrides, verbose)
    if not headless:
        require_gui()  # before loading the model: fail fast
    _, predictor = build_predictor(params, model, backend.value if backend else None)
    report = run_webcam(device, predictor, params.infer, headless=headless, max_frames=max_frames)
    logger.info("%s", json.dumps(report.to_dict()))


__all__ = ["Backend", "predict_app"]
