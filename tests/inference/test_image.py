"""Image analysis on real photos and awkward files: faces, JSON, outputs, and a batch that goes on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from emonext.inference.image import PREDICTIONS_FILE, ImageReport, analyze_images, decode_color, expand_inputs
from emonext.inference.stn import has_stn
from tests.conftest import png_header_only
from tests.inference.support import COUPLE, PORTRAIT, TWO_PEOPLE, builtin_predictor, model_predictor

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portrait in every awkward encoding, plus broken files and a photo without a face."""
    root = tmp_path_factory.mktemp("awkward")
    portrait = Image.open(PORTRAIT).convert("RGB")
    portrait.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    gray16 = (np.asarray(portrait.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(root / "gray16.png")
    assert Image.open(root / "gray16.png").mode.startswith("I")
    rgba = portrait.convert("RGBA")
    alpha = np.zeros((portrait.height, portrait.width), dtype=np.uint8)
    alpha[20:-20, 20:-20] = 255  # a transparent frame around the face
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / "rgba.png")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (384, 381), dtype=np.uint8))
    portrait.save(root / "animated.gif", save_all=True, append_images=[noise], duration=100, loop=0)
    # Stored sideways with an EXIF orientation tag saying so: must come out upright.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    portrait.transpose(Image.Transpose.ROTATE_90).save(root / "sideways.jpg", exif=exif, quality=95)
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(PORTRAIT.read_bytes()[:3000])
    (root / "notes.jpg").write_text("this is not an image\n")
    (root / "bomb.png").write_bytes(png_header_only(30000, 30000))
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    Image.fromarray(gradient).save(root / "wall.png")
    return root


def test_real_photos_give_their_faces_and_files(tmp_path: Path) -> None:
    report = analyze_images([PORTRAIT, TWO_PEOPLE, COUPLE], builtin_predictor(), tmp_path, progress=False)
    assert [len(image.faces) for image in report.images] == [1, 2, 2]
    assert all(image.status == "ok" for image in report.images)
    document = json.loads((tmp_path / PREDICTIONS_FILE).read_text())
    assert document["classes"] == list(CLASSES)
    assert document["counts"] == {"ok": 3, "no_face": 0, "error": 0, "faces": 5}
    two = document["images"][1]
    assert two["path"] == str(TWO_PEOPLE) and two["status"] == "ok"
    assert (two["width"], two["height"]) == (1126, 661)
    first, second = two["faces"]
    assert first["box"]["x"] < second["box"]["x"]  # left to right
    for face in two["faces"]:
        assert set(face["box"]) == {"x", "y", "width", "height"}
        assert list(face["probabilities"]) == list(CLASSES)
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    annotated = cv2.imread(str(tmp_path / two["annotated"]))
    assert annotated.shape == (661, 1126, 3)
    for stem, faces in (("justinshenk_fer_justin", 1), ("ageitgey_two_people", 2), ("deepface_couple", 2)):
        assert cv2.imread(str(tmp_path / f"{stem}.annotated.jpg")) is not None
        for index in range(faces):
            chart = cv2.imread(str(tmp_path / f"{stem}.face{index}.png"))
            assert chart is not None and chart.shape[1] == 360
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_awkward_and_broken_files_are_reported_and_the_batch_goes_on(awkward: Path, tmp_path: Path) -> None:
    report = analyze_images([awkward], builtin_predictor(), tmp_path, batch_size=4, progress=False)
    by_name = {image.path.name: image for image in report.images}
    assert sorted(by_name) == sorted(path.name for path in awkward.iterdir())
    for name in ("cmyk.jpg", "gray16.png", "rgba.png", "animated.gif", "sideways.jpg"):
        assert by_name[name].status == "ok" and len(by_name[name].faces) == 1, (name, by_name[name].message)
    assert (by_name["sideways.jpg"].width, by_name["sideways.jpg"].height) == (381, 384)  # upright
    for name, reason in (
        ("empty.jpg", "undecodable"),
        ("truncated.jpg", "undecodable"),
        ("notes.jpg", "undecodable"),
        ("bomb.png", "too_large"),
    ):
        image = by_name[name]
        assert image.status == "error" and not image.faces and image.annotated is None
        assert str(awkward / name) in image.message and reason in image.message
    wall = by_name["wall.png"]
    assert wall.status == "no_face" and "wall.png" in wall.message and wall.annotated is not None
    counts = json.loads(report.predictions_file.read_text())["counts"]
    assert counts == {"ok": 5, "no_face": 1, "error": 4, "faces": 5}


def test_decode_color_matches_the_gray_pipeline_orientation(awkward: Path) -> None:
    upright = decode_color(PORTRAIT)
    sideways = decode_color(awkward / "sideways.jpg")
    assert upright.shape == sideways.shape == (384, 381, 3)
    assert np.abs(upright.astype(int) - sideways.astype(int)).mean() < 4  # same picture, JPEG noise apart
    white_frame = decode_color(awkward / "rgba.png")
    assert (white_frame[:10, :10] == 255).all()  # transparency composited onto white


def test_inputs_expand_folders_and_globs_sorted(awkward: Path, tmp_path: Path) -> None:
    assert expand_inputs([awkward]) == sorted(path for path in awkward.iterdir())
    assert expand_inputs([str(awkward / "*.png")]) == sorted(awkward.glob("*.png"))
    missing = tmp_path / "missing.jpg"
    assert expand_inputs([missing, missing]) == [missing]  # reported later, once
    with pytest.raises(ValueError, match="no images found"):
        expand_inputs([str(tmp_path / "*.jpg")])


def test_stn_view_and_json_only(tmp_path: Path, trained_run: Path) -> None:
    emonext = model_predictor(trained_run)  # EmoNeXt with its Spatial Transformer
    assert has_stn(emonext)
    report: ImageReport = analyze_images([PORTRAIT], emonext, tmp_path, stn=True, progress=False)
    view = cv2.imread(str(tmp_path / "justinshenk_fer_justin.face0.stn.png"))
    assert view is not None and view.shape == (192 + 28, 2 * 192 + 8, 3)  # input | aligned, captioned
    assert report.images[0].faces[0].stn is not None
    quiet = tmp_path / "quiet"
    analyze_images([PORTRAIT], builtin_predictor(), quiet, write_images=False, progress=False)
    assert sorted(path.name for path in quiet.iterdir()) == [PREDICTIONS_FILE]
