"""Live mode with the fixture video standing in for a camera: JSON lines, stop conditions, errors."""

from __future__ import annotations

import io
import json
import re

import pytest
from typer.testing import CliRunner

from emonext.inference.cli import predict_app
from emonext.inference.webcam import CameraError, LiveFrame, gui_available, open_capture, run_webcam
from tests.conftest import PARAMS_FILE
from tests.inference.support import CLIP, builtin_predictor, infer_config

runner = CliRunner()


def test_headless_cli_prints_one_json_line_per_frame() -> None:
    result = runner.invoke(
        predict_app,
        ["webcam", "--device", str(CLIP), "--headless", "--max-frames", "20", "--model", "builtin",
         "--params", str(PARAMS_FILE)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 20
    assert [line["frame"] for line in lines] == list(range(20))
    assert all(line["fps"] > 0 and line["time"] >= 0 for line in lines)
    faces = [face for line in lines for face in line["faces"]]
    assert faces and {face["id"] for face in faces} >= {1}
    assert set(faces[0]) == {"id", "box", "label", "confidence", "probabilities"}
    assert len(faces[0]["probabilities"]) == 7


def test_bad_device_is_named() -> None:
    result = runner.invoke(
        predict_app,
        ["webcam", "--device", "9", "--headless", "--model", "builtin", "--params", str(PARAMS_FILE)],
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "no camera at device 9" in result.output
    with pytest.raises(CameraError, match=re.escape("cannot open video source 'rtsp://127.0.0.1:9/none'")):
        open_capture("rtsp://127.0.0.1:9/none")


@pytest.mark.skipif(gui_available(), reason="this OpenCV build can open windows")
def test_window_mode_explains_how_to_go_headless() -> None:
    result = runner.invoke(predict_app, ["webcam", "--params", str(PARAMS_FILE)])
    assert result.exit_code == 2
    assert "--headless" in result.output and "emonext ui" in result.output


def test_library_stops_on_callback_and_at_end_of_stream() -> None:
    seen: list[LiveFrame] = []

    def on_frame(frame: LiveFrame) -> bool:
        seen.append(frame)
        return frame.index < 4  # stop after the 5th frame

    sink = io.StringIO()
    report = run_webcam(
        str(CLIP), builtin_predictor(), infer_config(), headless=True, on_frame=on_frame, stream=sink
    )
    assert report.stopped == "callback" and report.frames == 5 and len(sink.getvalue().splitlines()) == 5
    assert seen[-1].image.shape == (336, 596, 3)  # the annotated frame, for a GUI
    assert report.timings["detect"] > 0


def test_ctrl_c_ends_the_session_cleanly() -> None:
    def interrupt(frame: LiveFrame) -> None:
        if frame.index == 2:
            raise KeyboardInterrupt

    sink = io.StringIO()
    report = run_webcam(
        CLIP, builtin_predictor(), infer_config(), headless=True, on_frame=interrupt, stream=sink
    )
    assert report.stopped == "interrupted" and report.frames == 3
    assert len(sink.getvalue().splitlines()) == 3
