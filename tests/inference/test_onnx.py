"""The onnxruntime classifier: same answers as PyTorch on real photos, one export per checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from emonext.checkpoint import Checkpoint
from emonext.fileio import content_hash
from emonext.inference import onnx_backend
from emonext.inference.onnx_backend import (
    META_CLASSES,
    META_SOURCE_MD5,
    OnnxFaceClassifier,
    OnnxModelError,
    cached_onnx_path,
    onnx_cache_dir,
    onnx_classifier_for,
    read_onnx_metadata,
)
from emonext.registry import LoadedModel, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHOTOS = [
    FIXTURES / "justinshenk_fer_justin.jpg",
    FIXTURES / "ageitgey_two_people.jpg",
    FIXTURES / "deepface_couple.jpg",
    FIXTURES / "sta326_123.jpg",
]


@pytest.fixture(scope="module")
def builtin() -> LoadedModel:
    return load_model("builtin")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_classifier(builtin: LoadedModel, cache: Path) -> OnnxFaceClassifier:
    """The built-in model exported once for the whole module (~6 s)."""
    return onnx_classifier_for(builtin.checkpoint, cache, threads=2)


def test_onnx_gives_the_same_faces_classes_and_probabilities_as_torch(
    builtin: LoadedModel, onnx_classifier: OnnxFaceClassifier
) -> None:
    torch_rows = builtin.predictor().predict(PHOTOS)
    onnx_rows = builtin.predictor(classifier=onnx_classifier).predict(PHOTOS)
    faces = [row for row in torch_rows if row.status == "face"]
    assert len(faces) >= 6  # 1 + 2 + 2 + 1 faces, classified in one batch
    assert len(onnx_rows) == len(torch_rows)
    for ours, theirs in zip(onnx_rows, torch_rows, strict=True):
        assert (ours.image, ours.face, ours.status, ours.box) == (
            theirs.image,
            theirs.face,
            theirs.status,
            theirs.box,
        )
        if theirs.probabilities is None:
            continue
        assert ours.probabilities is not None and ours.probabilities.dtype == np.float32
        assert ours.probabilities.argmax() == theirs.probabilities.argmax()
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-3)
        assert ours.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_pre_cropped_faces_and_any_batch_size_match_torch(
    builtin: LoadedModel, onnx_classifier: OnnxFaceClassifier
) -> None:
    side = builtin.checkpoint.data_config.image_size
    faces = np.random.default_rng(0).integers(0, 256, (5, side, side), dtype=np.uint8)
    expected = builtin.predictor().classifier(faces)
    for count in (1, 2, 5):
        np.testing.assert_allclose(onnx_classifier(faces[:count]), expected[:count], atol=1e-4)
    assert onnx_classifier(faces[:0]).shape == (0, len(builtin.classes))
    with pytest.raises(ValueError, match="expected uint8 faces"):
        onnx_classifier(faces.astype(np.float32))


def test_the_export_stores_classes_and_source_md5_and_is_reused(
    builtin: LoadedModel, onnx_classifier: OnnxFaceClassifier, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = builtin.checkpoint
    path = cached_onnx_path(checkpoint, cache)
    assert onnx_classifier.path == path and list(cache.iterdir()) == [path]  # no temporary left
    metadata = read_onnx_metadata(path)
    assert metadata[META_SOURCE_MD5] == content_hash(checkpoint.path)
    assert metadata[META_CLASSES] == '["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]'

    def no_export(*_: object) -> Path:
        raise AssertionError("exported again instead of reusing the cache")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    modified = path.stat().st_mtime_ns
    again = onnx_classifier_for(checkpoint, cache)
    assert again.path == path and path.stat().st_mtime_ns == modified
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(cache))
    assert onnx_cache_dir() == cache and cached_onnx_path(checkpoint) == path


def test_a_missing_or_corrupt_onnx_file_is_a_clear_error(
    builtin: LoadedModel, onnx_classifier: OnnxFaceClassifier, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(OnnxModelError, match=r"missing\.onnx: ONNX model file not found"):
        OnnxFaceClassifier(missing, builtin.classes)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_classifier.path.read_bytes()[:5000])  # a truncated download
    with pytest.raises(OnnxModelError, match=r"corrupt\.onnx: not a loadable ONNX model"):
        OnnxFaceClassifier(corrupt, builtin.classes)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model")
    with pytest.raises(OnnxModelError, match=r"garbage\.onnx: not a (readable|loadable) ONNX model"):
        read_onnx_metadata(garbage)
    with pytest.raises(OnnxModelError, match="differ from the expected classes"):
        OnnxFaceClassifier(onnx_classifier.path, ("happy", "sad"))


def test_a_corrupt_cached_export_is_replaced(
    builtin: LoadedModel, onnx_classifier: OnnxFaceClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = builtin.checkpoint
    cached = cached_onnx_path(checkpoint, tmp_path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"\x00" * 100)
    exports: list[Path] = []

    def fake_export(_: Checkpoint, path: Path, opset: int | None = None) -> Path:
        exports.append(path)
        shutil.copyfile(onnx_classifier.path, path)  # stands in for the 6 s export
        return path

    monkeypatch.setattr(onnx_backend, "export_onnx", fake_export)
    classifier = onnx_classifier_for(checkpoint, tmp_path)
    assert exports == [cached] and classifier.source_md5 == content_hash(checkpoint.path)
