"""Video annotation through real ffmpeg pipes: H.264 out, audio bit for bit, rotation, errors, memory."""

from __future__ import annotations

import csv
import inspect
import re
import tracemalloc
from pathlib import Path

import cv2
import pytest

from emonext.inference.ffmpeg import FrameReader, VideoError, probe_video, stream_md5
from emonext.inference.video import VideoReport, analyze_video
from tests.inference.support import (
    CLIP,
    CLIP_FRAMES,
    CLIP_SIZE,
    builtin_predictor,
    count_frames,
    describe,
    ffmpeg,
    infer_config,
    short_clip,
)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[VideoReport, int]:
    """The fixture clip analysed once (detect every 3rd frame), with the peak traced memory."""
    output = tmp_path_factory.mktemp("video") / "clip.annotated.mp4"
    predictor = builtin_predictor()
    progress: list[float] = []
    tracemalloc.start()
    try:
        report = analyze_video(
            CLIP, output, predictor, infer_config(), progress=False, on_progress=progress.append
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 10
    return report, peak


def test_output_is_h264_with_every_frame_and_the_same_duration(annotated: tuple[VideoReport, int]) -> None:
    report, _ = annotated
    text = describe(report.output)
    assert re.search(r"Video: h264 .*yuv420p", text), text
    assert "Audio:" not in text and report.audio == "none"  # the clip has no sound
    assert report.frames == CLIP_FRAMES and abs(count_frames(report.output) - CLIP_FRAMES) <= 1
    info, source = probe_video(report.output), probe_video(CLIP)
    assert (info.width, info.height) == CLIP_SIZE
    assert info.duration == pytest.approx(source.duration, abs=0.1)
    assert set(report.timings) >= {"decode", "detect", "classify", "annotate", "encode", "total"}
    assert all(seconds >= 0 for seconds in report.timings.values()) and report.fps > 0


def test_csv_timeline_and_summary(annotated: tuple[VideoReport, int]) -> None:
    report, _ = annotated
    with report.csv_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert list(rows[0]) == ["time_s", "frame", "face_id", "x", "y", "w", "h", *classes, "label"]
    face_one = [row for row in rows if row["face_id"] == "1"]
    assert len(face_one) > 0.8 * CLIP_FRAMES  # one woman, tracked nearly all along
    assert [int(row["frame"]) for row in face_one] == sorted(int(row["frame"]) for row in face_one)
    assert float(face_one[1]["time_s"]) - float(face_one[0]["time_s"]) == pytest.approx(0.04, abs=1e-3)
    for row in face_one[:5]:
        assert sum(float(row[name]) for name in classes) == pytest.approx(1.0, abs=2e-3)
        assert row["label"] == max(classes, key=lambda name: float(row[name]))
    timeline = report.faces[0].timeline
    assert timeline is not None and cv2.imread(str(timeline)) is not None
    summary = report.summary_file.read_text()
    assert summary.startswith("justinshenk_fer_test.mp4 (0:04.6)")
    assert re.search(r"^face 1: \w+ 0:0\d\.\d\u20130:0\d\.\d", summary, re.MULTILINE), summary
    assert report.report_file.is_file()
    assert not [
        path for path in report.output.parent.iterdir() if path.name.startswith(".")
    ]  # no temporaries


def test_memory_stays_flat(annotated: tuple[VideoReport, int]) -> None:
    """Frames stream through: the traced peak is a small fraction of the decoded video."""
    _, peak = annotated
    decoded = CLIP_FRAMES * CLIP_SIZE[0] * CLIP_SIZE[1] * 3  # 69 MB if all frames were held
    assert peak < decoded / 3, f"peak {peak / 1e6:.1f} MB vs {decoded / 1e6:.1f} MB decoded"
    assert inspect.isgenerator(iter(FrameReader(CLIP)))


def test_audio_is_copied_bit_for_bit(tmp_path: Path) -> None:
    source = tmp_path / "talk.mp4"
    video = short_clip(tmp_path / "short.mp4")
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1.5"]
    ffmpeg("-i", str(video), *tone, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(source))
    report = analyze_video(source, tmp_path / "out.mp4", builtin_predictor(), infer_config(), progress=False)
    assert report.audio == "copied"
    assert stream_md5(report.output, "a:0") == stream_md5(source, "a:0")
    assert "Audio: aac" in describe(report.output)


def test_rotated_video_comes_out_upright(tmp_path: Path) -> None:
    short = short_clip(tmp_path / "short.mp4", 0.6)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(short), "-c", "copy", str(rotated))
    assert probe_video(rotated).display_size == (CLIP_SIZE[1], CLIP_SIZE[0])
    report = analyze_video(rotated, tmp_path / "out.mp4", builtin_predictor(), infer_config(), progress=False)
    info = probe_video(report.output)
    assert (info.width, info.height, info.rotation) == (CLIP_SIZE[1], CLIP_SIZE[0], 0.0)


def test_variable_frame_rate_keeps_real_times(tmp_path: Path) -> None:
    """A 0.4 s gap after frame 10: the CSV has the real times, the output repeats a frame over the gap."""
    vfr = tmp_path / "vfr.mkv"
    ffmpeg("-t", "0.8", "-i", str(CLIP), "-vf", "setpts=PTS+gte(N\\,10)*0.4/TB", "-fps_mode", "passthrough",
           "-c:v", "libx264", "-preset", "ultrafast", str(vfr))  # fmt: skip
    config = infer_config("infer.detect_every=1")
    report = analyze_video(vfr, tmp_path / "out.mp4", builtin_predictor(), config, progress=False)
    with report.csv_file.open(newline="") as handle:
        times = {int(row["frame"]): float(row["time_s"]) for row in csv.DictReader(handle)}
    assert times[10] - times[9] == pytest.approx(0.44, abs=1e-3)
    assert report.frames == 20 and report.written_frames == 30  # 10 slots of 40 ms repeat frame 9
    assert count_frames(report.output) == 30


@pytest.mark.parametrize("damage", ["truncated", "truncated_faststart", "not_a_video"])
def test_corrupt_video_fails_clearly_and_writes_nothing(tmp_path: Path, damage: str) -> None:
    broken = tmp_path / f"{damage}.mp4"
    if damage == "truncated":  # index (moov) at the end: nothing decodable
        broken.write_bytes(CLIP.read_bytes()[:300_000])
    elif damage == "truncated_faststart":  # index first: frames decode until the data stops
        whole = tmp_path / "whole.mp4"
        ffmpeg("-i", str(CLIP), "-c", "copy", "-movflags", "+faststart", str(whole))
        broken.write_bytes(whole.read_bytes()[:120_000])
        whole.unlink()
    else:
        broken.write_text("not a video at all\n")
    out_dir = tmp_path / "out"
    with pytest.raises(VideoError, match=re.escape(str(broken))):
        analyze_video(broken, out_dir / "clip.mp4", builtin_predictor(), infer_config(), progress=False)
    assert not out_dir.exists() or not list(out_dir.iterdir())  # no output, no temporary file


def test_missing_file_and_bad_output_type(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such video file"):
        analyze_video(
            tmp_path / "nope.mp4", tmp_path / "o.mp4", builtin_predictor(), infer_config(), progress=False
        )
    with pytest.raises(ValueError, match="unsupported video type"):
        analyze_video(CLIP, tmp_path / "o.gif", builtin_predictor(), infer_config(), progress=False)


def test_cancelling_from_on_progress_leaves_nothing(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        if fraction > 0.3:
            raise Cancelled

    out_dir = tmp_path / "out"
    clip = short_clip(tmp_path / "short.mp4", 0.8)
    with pytest.raises(Cancelled):
        analyze_video(
            clip, out_dir / "c.mp4", builtin_predictor(), infer_config(), progress=False, on_progress=cancel
        )
    assert not list(out_dir.iterdir())
