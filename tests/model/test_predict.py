"""Per-face prediction on real photos: detection, crops, batching and bad inputs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emonext.checkpoint import read_checkpoint
from emonext.predict import EmotionPredictor, to_gray

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TWO_PEOPLE = FIXTURES / "ageitgey_two_people.jpg"
PORTRAIT = FIXTURES / "justinshenk_fer_justin.jpg"


@pytest.fixture(scope="module")
def predictor(trained_run: Path) -> EmotionPredictor:
    return EmotionPredictor(read_checkpoint(trained_run))


def test_every_face_of_every_image_gets_a_distribution(predictor: EmotionPredictor) -> None:
    rows = predictor.predict([TWO_PEOPLE, PORTRAIT])
    faces = [row for row in rows if row.status == "face"]
    assert [(row.image, row.face) for row in faces] == [(0, 0), (0, 1), (1, 0)]
    first, second = faces[0].box, faces[1].box
    assert first is not None and second is not None and first.x < second.x  # left to right
    for row in faces:
        assert row.probabilities is not None and row.probabilities.shape == (7,)
        assert row.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    document = faces[2].to_dict(predictor.classes)
    assert document["label"] in predictor.classes and set(document["probabilities"]) == set(predictor.classes)


def test_paths_bytes_base64_and_arrays_give_the_same_answer(predictor: EmotionPredictor) -> None:
    data = PORTRAIT.read_bytes()
    rgb = np.asarray(Image.open(PORTRAIT).convert("RGB"))
    inputs = [str(PORTRAIT), data, base64.b64encode(data).decode(), rgb]
    rows = predictor.predict(inputs)
    assert [row.status for row in rows] == ["face"] * 4
    reference = rows[0].probabilities
    for row in rows[1:3]:
        np.testing.assert_allclose(row.probabilities, reference, atol=1e-6)
    # The array path converts RGB to gray itself (rounding may differ from PIL by one level).
    np.testing.assert_allclose(rows[3].probabilities, reference, atol=0.05)


def test_bad_inputs_are_reported_and_the_batch_goes_on(predictor: EmotionPredictor, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(PORTRAIT.read_bytes()[:300])
    blank = np.full((200, 200), 200, dtype=np.uint8)
    rows = predictor.predict([truncated, "no/such/file.jpg", blank, PORTRAIT])
    assert [row.status for row in rows] == ["error", "error", "no_face", "face"]
    assert "truncated.jpg" in rows[0].detail
    assert "no/such/file.jpg" in rows[1].detail
    assert rows[2].detail.startswith("no face found")


def test_pre_cropped_faces_skip_detection(predictor: EmotionPredictor) -> None:
    face = np.asarray(
        Image.open(next((Path(__file__).parents[2] / "data/sample/fer2013/val/happy").iterdir()))
    )
    rows = predictor.predict([face], detect_faces=False)
    assert rows[0].status == "face" and rows[0].box is not None and rows[0].box.width == face.shape[1]


def test_array_conversion_handles_float_16_bit_and_alpha() -> None:
    gray = to_gray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    assert gray.dtype == np.uint8 and gray.max() == 255
    assert to_gray(np.full((4, 4), 65535, dtype=np.uint16)).max() == 255
    assert to_gray(np.zeros((4, 4, 4), dtype=np.uint8)).shape == (4, 4)
    with pytest.raises(ValueError, match="expected"):
        to_gray(np.zeros((4,), dtype=np.uint8))
    png = io.BytesIO()
    Image.new("LA", (5, 5)).save(png, format="PNG")
    assert to_gray(png.getvalue()).shape == (5, 5)
