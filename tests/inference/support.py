"""Shared helpers of the image, video and webcam tests: the built-in model, fixtures, ffmpeg."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from emonext.config import InferConfig, load_params
from emonext.inference.ffmpeg import ffmpeg_exe
from emonext.predict import EmotionPredictor
from emonext.registry import load_default_model
from tests.conftest import PARAMS_FILE, REPO

FIXTURES = REPO / "tests" / "fixtures"
PORTRAIT = FIXTURES / "justinshenk_fer_justin.jpg"
TWO_PEOPLE = FIXTURES / "ageitgey_two_people.jpg"
COUPLE = FIXTURES / "deepface_couple.jpg"
CLIP = FIXTURES / "justinshenk_fer_test.mp4"
#: What ``ffmpeg -i`` says about the fixture clip.
CLIP_FRAMES = 115
CLIP_SIZE = (596, 336)


def infer_config(*overrides: str) -> InferConfig:
    """The repository's ``infer`` section, with overrides."""
    return load_params(PARAMS_FILE, list(overrides)).infer


@functools.cache
def builtin_predictor() -> EmotionPredictor:
    """The built-in model's predictor with the inference detector settings (built once)."""
    return model_predictor("builtin")


def model_predictor(uri: str | Path) -> EmotionPredictor:
    """The predictor of any model reference (``builtin``, a checkpoint or run folder, a registry URI)
    with the inference detector settings."""
    infer = infer_config()
    return load_default_model(str(uri)).predictor(batch_size=infer.batch_size, face_config=infer.face)


def ffmpeg(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg quietly; fail the test with its message when it fails."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def describe(path: Path) -> str:
    """``ffmpeg -i`` on a file: its stream description (there is no ffprobe)."""
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stderr


def count_frames(path: Path) -> int:
    """Video packets of the first video stream (one per frame for H.264 in MP4)."""
    result = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return int(re.findall(r"frame=\s*(\d+)", result.stderr)[-1])


def short_clip(target: Path, seconds: float = 1.2, *extra: str) -> Path:
    """The fixture clip's first ``seconds``, re-encoded (fast), with extra output options."""
    ffmpeg(
        "-i", str(CLIP), "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", *extra, str(target)
    )
    return target
