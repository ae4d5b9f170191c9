"""``emonext predict image|video`` through the command line (the Typer app mounted as ``predict``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from emonext.inference.cli import predict_app
from tests.conftest import PARAMS_FILE
from tests.inference.support import PORTRAIT, TWO_PEOPLE, short_clip

runner = CliRunner()
COMMON = ["--model", "builtin", "--params", str(PARAMS_FILE), "--no-progress"]


def test_image_folder_with_json(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PORTRAIT, photos / "portrait.jpg")
    shutil.copy(TWO_PEOPLE, photos / "two.jpg")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    result = runner.invoke(predict_app, ["image", str(photos), "--out", str(out), "--json", *COMMON])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"]["uri"] == "builtin"
    assert [image["status"] for image in document["images"]] == ["error", "ok", "ok"]  # sorted by name
    assert "broken.png" in document["images"][0]["message"]
    assert [len(image["faces"]) for image in document["images"]] == [0, 1, 2]
    assert json.loads((out / "predictions.json").read_text())["counts"] == document["counts"]
    assert (out / "two.annotated.jpg").is_file() and (out / "two.face1.png").is_file()


def test_image_missing_everything_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(predict_app, ["image", str(tmp_path / "*.jpg"), *COMMON])
    assert result.exit_code == 2 and "error:" in result.output and "no images found" in result.output


def test_video_command_and_a_corrupt_file(tmp_path: Path) -> None:
    clip = short_clip(tmp_path / "clip.mp4", 0.6)
    out = tmp_path / "out" / "result.mp4"
    result = runner.invoke(predict_app, ["video", str(clip), "--out", str(out), "--json", *COMMON])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["frames"] == 15 and document["output"] == str(out) and out.is_file()
    assert Path(document["csv"]).name == "result.frames.csv"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:2000])
    result = runner.invoke(predict_app, ["video", str(broken), "--out", str(tmp_path / "b.mp4"), *COMMON])
    assert result.exit_code == 2 and str(broken) in result.output.replace("\n", "")
    assert not (tmp_path / "b.mp4").exists()
