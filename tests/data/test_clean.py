"""Cleaning on real photos and awkward files: face crops, blur, duplicates, label conflicts, outputs."""

from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from emonext.cleaning import REASONS, CleanReport, clean, pipeline
from emonext.cleaning.faces import Box, HaarFaceDetector, crop_face, merge_overlapping, select_faces
from emonext.cleaning.hashing import content_sha256, hamming_distances, near_duplicate_graph
from emonext.cleaning.pipeline import (
    CleanShard,
    FaceResult,
    ShardFunction,
    WorkerSettings,
    _cached_processor,
    decode_gray,
    discover_sources,
    plan_shards,
    process_shard,
)
from emonext.config import Params, load_params
from tests.conftest import PARAMS_FILE, REPO, SAMPLE, png_header_only

FIXTURES = REPO / "tests" / "fixtures"
TWO_PEOPLE = FIXTURES / "ageitgey_two_people.jpg"
COUPLE = FIXTURES / "deepface_couple.jpg"
WATERMARKED = FIXTURES / "sta326_123.jpg"
PORTRAIT = FIXTURES / "justinshenk_fer_justin.jpg"
#: First row of the watermark printed at the bottom of the stock photo.
WATERMARK_TOP = 670


def clean_params(output_dir: Path, sources: list[tuple[str, Path, bool]], *overrides: str) -> Params:
    listed = ", ".join(
        f"{{name: {name}, path: '{path}', pre_cropped: {str(pre_cropped).lower()}}}"
        for name, path, pre_cropped in sources
    )
    return load_params(
        PARAMS_FILE,
        [f"clean.sources=[{listed}]", f"clean.output_dir={output_dir}", "clean.workers=1", *overrides],
    )


def read_manifest(output_dir: Path) -> list[dict[str, str]]:
    with (output_dir / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def rows_of(manifest: list[dict[str, str]], original: str) -> list[dict[str, str]]:
    rows = [row for row in manifest if row["original"] == original]
    assert rows, f"{original} not in the manifest"
    return rows


def box_of(row: dict[str, str]) -> Box:
    return Box(*(int(value) for value in row["box"].split()))


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def build_web_source(root: Path) -> None:
    """A scraped-like class-layout folder: real photos, edited copies and broken files."""
    for label in ("happy", "sad", "surprise", "neutral", "angry", "fear"):
        (root / label).mkdir(parents=True)
    shutil.copy(TWO_PEOPLE, root / "happy" / "two_people.jpg")
    shutil.copy(COUPLE, root / "happy" / "couple.jpg")
    shutil.copy(PORTRAIT, root / "neutral" / "justin.jpg")

    portrait = Image.open(PORTRAIT).convert("RGB")
    half = portrait.resize((portrait.width // 2, portrait.height // 2), Image.Resampling.BICUBIC)
    half.save(root / "neutral" / "justin_resized.png")
    (root / "neutral" / "justin_reencoded.jpg").write_bytes(jpeg_bytes(portrait, quality=40))
    ImageEnhance.Brightness(portrait).enhance(1.25).save(root / "neutral" / "justin_brighter.jpg", quality=90)
    (root / "neutral" / "justin_all_three.jpg").write_bytes(
        jpeg_bytes(ImageEnhance.Brightness(half).enhance(1.2), quality=60)
    )
    # The same photo under another label: every copy must go.
    shutil.copy(TWO_PEOPLE, root / "sad" / "two_people_again.jpg")
    # Heavily blurred face (sigma 8% of the face side): still detected, too blurry to keep.
    sharp = cv2.imread(str(PORTRAIT))
    cv2.imwrite(str(root / "sad" / "justin_blurred.jpg"), cv2.GaussianBlur(sharp, (0, 0), 16))

    stock = Image.open(WATERMARKED)
    shutil.copy(WATERMARKED, root / "surprise" / "stock.jpg")
    gray = np.asarray(stock.convert("L"))
    stock.convert("CMYK").save(root / "surprise" / "stock_cmyk.jpg", quality=95)
    Image.fromarray(gray.astype(np.uint16) * 257).save(root / "surprise" / "stock_16bit.png")
    rgba = stock.convert("RGBA")
    alpha = np.full(gray.shape, 255, dtype=np.uint8)
    alpha[-60:] = 0  # the watermark band is transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / "surprise" / "stock_alpha.png")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, gray.shape, dtype=np.uint8))
    Image.fromarray(gray).save(root / "surprise" / "stock_animated.gif", save_all=True, append_images=[noise])
    big = stock.resize((stock.width * 6, stock.height * 6), Image.Resampling.BILINEAR)
    big.save(root / "surprise" / "stock_large.jpg", quality=85)

    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    Image.fromarray(gradient).save(root / "angry" / "gradient.png")
    Image.fromarray(gray[:20, :20]).save(root / "angry" / "tiny.png")
    (root / "fear" / "empty.jpg").write_bytes(b"")
    (root / "fear" / "html_as.jpg").write_bytes(b"<html><body>Not found</body></html>" * 10)
    (root / "fear" / "truncated.jpg").write_bytes(PORTRAIT.read_bytes()[:3000])
    (root / "fear" / "bomb.png").write_bytes(png_header_only(9000, 8000))


def build_copies_source(root: Path) -> dict[str, str]:
    """Pre-cropped copies of FER2013 sample faces; returns the copies' expected reasons."""
    expected = {}
    happy = sorted((SAMPLE / "train" / "happy").glob("*.jpg"))
    (root / "happy").mkdir(parents=True)
    (root / "sad").mkdir(parents=True)
    shutil.copy(happy[0], root / "happy" / "exact_copy.jpg")
    expected["happy/exact_copy.jpg"] = "duplicate"
    face = Image.open(happy[1]).convert("L")
    edited = ImageEnhance.Brightness(face.resize((96, 96), Image.Resampling.BICUBIC)).enhance(1.1)
    (root / "happy" / "edited_copy.jpg").write_bytes(jpeg_bytes(edited, quality=75))
    expected["happy/edited_copy.jpg"] = "near_duplicate"
    shutil.copy(happy[2], root / "sad" / "relabelled_copy.jpg")
    expected["sad/relabelled_copy.jpg"] = "label_conflict"
    return expected


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CleanReport, list[dict[str, str]], dict]:
    """One clean over the FER2013 sample, copies of it and a messy web folder, on two workers."""
    root = tmp_path_factory.mktemp("messy")
    build_web_source(root / "web")
    expected = build_copies_source(root / "copies")
    params = clean_params(
        root / "clean",
        [("fer2013", SAMPLE, True), ("copies", root / "copies", True), ("web", root / "web", False)],
        "clean.face.policy=all",
        "clean.workers=2",
    )
    report = clean(params.clean, params.data, progress=False)
    return report, read_manifest(root / "clean"), expected


def test_both_faces_found_in_two_person_photos(messy_run) -> None:
    _, manifest, _ = messy_run
    for original in ("happy/two_people.jpg", "happy/couple.jpg"):
        rows = rows_of(manifest, original)
        assert [row["face"] for row in rows] == ["0", "1"], original
        first, second = (box_of(row) for row in rows)
        assert first.iou(second) == 0 and first.x + first.width / 2 < second.x + second.width / 2
    assert all(row["fate"] == "kept" for row in rows_of(manifest, "happy/couple.jpg"))


def test_detector_finds_two_faces_and_largest_policy_keeps_one() -> None:
    params = load_params(PARAMS_FILE)
    detector = HaarFaceDetector(params.clean.face)
    gray = np.asarray(Image.open(TWO_PEOPLE).convert("L"))
    boxes = detector.detect(gray)
    assert len(boxes) == 2
    assert all(box.side >= params.clean.face.min_size for box in boxes)
    assert select_faces(boxes, "largest") == [max(boxes, key=lambda box: box.area)]
    crop, window = crop_face(gray, boxes[0], margin=0.15)
    assert crop.shape == (window.height, window.width) and window.width == window.height


def test_watermarked_stock_photo_cropped_to_the_face(messy_run) -> None:
    _, manifest, _ = messy_run
    (row,) = rows_of(manifest, "surprise/stock.jpg")
    assert row["fate"] == "kept"
    window = box_of(row)
    height = Image.open(WATERMARKED).height
    assert window.y + window.height < WATERMARK_TOP < height
    assert window.y + window.height / 2 < 0.6 * height
    face = cv2.imread(str(messy_run[0].output_dir / row["path"]), cv2.IMREAD_UNCHANGED)
    assert face.shape == (48, 48) and face.dtype == np.uint8


def test_awkward_formats_are_decoded(messy_run) -> None:
    _, manifest, _ = messy_run
    for name in (
        "stock_cmyk.jpg",
        "stock_16bit.png",
        "stock_alpha.png",
        "stock_animated.gif",
        "stock_large.jpg",
    ):
        (row,) = rows_of(manifest, f"surprise/{name}")
        assert row["phash"], f"{name}: {row['reason']} {row['detail']}"
        assert row["reason"] in ("duplicate", "near_duplicate"), name
        assert row["duplicate_of"] == "web:surprise/stock.jpg", name
    (large,) = rows_of(manifest, "surprise/stock_large.jpg")
    (stock,) = rows_of(manifest, "surprise/stock.jpg")
    # Decoded at a reduced scale, but the box is reported in the original's pixels.
    assert abs(box_of(large).y - 6 * box_of(stock).y) < 0.1 * 6 * box_of(stock).height


def test_broken_files_dropped_with_a_reason(messy_run) -> None:
    _, manifest, _ = messy_run
    expected = {
        "fear/empty.jpg": "undecodable",
        "fear/html_as.jpg": "undecodable",
        "fear/truncated.jpg": "undecodable",
        "fear/bomb.png": "too_large",
        "angry/tiny.png": "too_small",
        "angry/gradient.png": "no_face",
        "sad/justin_blurred.jpg": "blurry",
    }
    for original, reason in expected.items():
        (row,) = rows_of(manifest, original)
        assert (row["fate"], row["reason"]) == ("dropped", reason), f"{original}: {row['detail']}"
    assert rows_of(manifest, "fear/empty.jpg")[0]["detail"] == "empty file (0 bytes)"


def test_near_duplicates_after_resize_reencode_and_brightness(messy_run) -> None:
    _, manifest, _ = messy_run
    (original,) = rows_of(manifest, "neutral/justin.jpg")
    assert original["fate"] == "kept"
    for edited in (
        "justin_resized.png",
        "justin_reencoded.jpg",
        "justin_brighter.jpg",
        "justin_all_three.jpg",
    ):
        (row,) = rows_of(manifest, f"neutral/{edited}")
        assert (row["reason"], row["duplicate_of"]) == ("near_duplicate", "web:neutral/justin.jpg"), edited


def test_duplicates_across_sources_earlier_source_wins(messy_run) -> None:
    _, manifest, expected = messy_run
    for original, reason in expected.items():
        rows = [row for row in manifest if row["source"] == "copies" and row["original"] == original]
        assert [row["reason"] for row in rows] == [reason], original
        if reason != "label_conflict":
            fer_row = next(row for row in manifest if f"fer2013:{row['original']}" == rows[0]["duplicate_of"])
            assert fer_row["fate"] == "kept" and fer_row["label"] == "happy"


def test_same_image_under_two_labels_is_dropped_everywhere(messy_run) -> None:
    report, manifest, _ = messy_run
    conflicted = rows_of(manifest, "happy/two_people.jpg") + rows_of(manifest, "sad/two_people_again.jpg")
    assert len(conflicted) == 4
    assert {row["reason"] for row in conflicted} == {"label_conflict"}
    relabelled = next(row for row in manifest if row["original"] == "sad/relabelled_copy.jpg")
    fer_original = next(row for row in manifest if f"fer2013:{row['original']}" == relabelled["duplicate_of"])
    assert fer_original["reason"] == "label_conflict"
    groups = report.label_conflicts
    assert len(groups) == 3 and all(len({member["label"] for member in group}) == 2 for group in groups)


def test_fer_sample_passes_through_without_detection(messy_run) -> None:
    report, manifest, _ = messy_run
    fer_rows = [row for row in manifest if row["source"] == "fer2013"]
    assert len(fer_rows) == 350
    assert {row["box"] for row in fer_rows} == {"0 0 48 48"}
    assert not any(row["reason"] in ("no_face", "undecodable") for row in fer_rows)
    assert sum(row["fate"] == "kept" for row in fer_rows) >= 340
    assert {row["usage"] for row in fer_rows} == {"train", "val"}
    assert report.workers == 2


def test_outputs_manifest_report_and_contact_sheets(messy_run) -> None:
    report, manifest, _ = messy_run
    output = report.output_dir
    kept = [row for row in manifest if row["fate"] == "kept"]
    assert sorted(str(path.relative_to(output)) for path in (output / "images").rglob("*.png")) == sorted(
        row["path"] for row in kept
    )
    assert all(row["path"] == f"images/{row['label']}/{row['sha256']}.png" for row in kept)
    assert all(row["group"] for row in kept)
    two_faces = rows_of(manifest, "happy/couple.jpg")
    assert two_faces[0]["group"] == two_faces[1]["group"]
    summary = json.loads((output / "report.json").read_text())
    assert summary["kept"] == report.kept == len(kept)
    assert summary["dropped_total"] == len(manifest) - len(kept) == sum(summary["dropped"].values())
    assert set(summary["dropped"]) == set(REASONS)
    assert summary["dropped_by_class"]["blurry"]["sad"] == 1
    assert summary["throughput"]["images_per_second"] > 0
    markdown = (output / "report.md").read_text()
    assert "| label_conflict |" in markdown and "**kept**" in markdown
    for reason in ("no_face", "blurry", "near_duplicate", "label_conflict", "too_small"):
        sheet = Image.open(output / f"contact_{reason}.png")
        assert sheet.mode == "L" and sheet.width >= 64
    assert not list(output.parent.glob(".clean.staging-*"))


def build_photo_source(root: Path) -> Path:
    """Real photos that need face detection, in a class layout (one with two faces)."""
    for label, photo in (("happy", TWO_PEOPLE), ("neutral", PORTRAIT), ("surprise", WATERMARKED)):
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / label / photo.name)
    return root


def output_files(output_dir: Path) -> dict[str, bytes]:
    """Every output file by relative path, but the reports (their timings change every run)."""
    return {
        path.relative_to(output_dir).as_posix(): path.read_bytes()
        for path in sorted(output_dir.rglob("*"))
        if path.is_file() and path.name not in ("report.json", "report.md")
    }


def report_counts(output_dir: Path) -> dict[str, object]:
    """``report.json`` without what may differ between runs: timings, workers, folder."""
    summary = json.loads((output_dir / "report.json").read_text())
    return {key: value for key, value in summary.items() if key not in ("throughput", "output_dir", "config")}


def test_any_shard_mapper_and_plan_give_the_same_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = build_photo_source(tmp_path / "photos")
    sources = [("fer2013", SAMPLE / "val", True), ("photos", photos, False)]  # 70 faces, 3 photos

    def params_for(output_dir: Path) -> Params:
        return clean_params(output_dir, sources, "clean.workers=2", "clean.face.policy=all")

    default = params_for(tmp_path / "default")
    report = clean(default.clean, default.data, progress=False)
    assert (report.workers, report.executor) == (2, "process pool")
    assert report.kept > 60 and report.faces > report.inputs  # both faces of the two-person photo
    expected, expected_counts = output_files(tmp_path / "default"), report_counts(tmp_path / "default")
    assert "manifest.csv" in expected and sum(name.endswith(".png") for name in expected) >= report.kept

    plans: list[list[int]] = []

    def in_process(function: ShardFunction, shards: Sequence[CleanShard]) -> Iterable[list[list[FaceResult]]]:
        plans.append([len(shard) for shard in shards])
        return map(function, shards)

    # Small shard limits, so that the scale changes the plan of 73 items too.
    monkeypatch.setattr(pipeline, "PRECROPPED_CHUNK", 8)
    monkeypatch.setattr(pipeline, "DETECT_CHUNK", 1)
    for workers, scale in ((1, 1), (3, 1), (40, 1), (1, 3)):
        other = params_for(tmp_path / f"mapped-{workers}-{scale}")
        report = clean(
            other.clean,
            other.data,
            progress=False,
            map_shards=in_process,
            workers=workers,
            executor="map",
            shard_scale=scale,
        )
        assert (report.workers, report.executor) == (workers, "map")
        assert output_files(other.clean.output_dir) == expected
        assert report_counts(other.clean.output_dir) == expected_counts
    assert len({tuple(plan) for plan in plans}) == 4, plans
    assert all(sum(plan) == 73 for plan in plans)
    assert plans[0][0] == 8 and plans[3][0] == 19 and plans[2][-3:] == [1, 1, 1]


def test_shards_pickle_and_reuse_one_processor_per_thread(tmp_path: Path) -> None:
    params = clean_params(tmp_path / "clean", [("photos", build_photo_source(tmp_path / "photos"), False)])
    items = discover_sources(params.clean.sources, params.data.classes)
    settings = WorkerSettings(params.clean.face, 32, 15.0, 8, 48, tmp_path / "staging")
    for label in params.data.classes:
        (tmp_path / "staging" / "images" / label).mkdir(parents=True)
    shards = plan_shards(items, settings, workers=3)
    assert [len(shard) for shard in shards] == [1, 1, 1] and [shard.number for shard in shards] == [0, 1, 2]
    copy = pickle.loads(pickle.dumps(shards[0]))
    assert copy.items[0][1].original == shards[0].items[0][1].original
    first = process_shard(copy)
    assert first[0][0].sha256 and (tmp_path / "staging" / first[0][0].path).is_file()

    processors = []

    def remember_processor() -> None:
        processors.append(_cached_processor(settings))

    remember_processor()
    remember_processor()
    thread = threading.Thread(target=remember_processor)
    thread.start()
    thread.join()
    # One per thread (a Haar cascade is not thread-safe), the same for every shard of a thread.
    assert processors[0] is processors[1] and processors[2] is not processors[0]


def test_csv_source_malformed_rows_and_image_size(tmp_path: Path) -> None:
    faces = [np.asarray(Image.open(path).convert("L")) for path in sorted(SAMPLE.rglob("*.jpg"))[:3]]
    lines = ["emotion,pixels,Usage"]
    lines += [
        f"{code},{' '.join(map(str, face.reshape(-1)))},{usage}"
        for code, face, usage in zip((3, 4, 6), faces, ("Training", "PublicTest", "PrivateTest"), strict=True)
    ]
    lines += ["3,1 2 3,Training", "9," + " ".join(["0"] * 2304) + ",Training"]
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    params = clean_params(
        tmp_path / "clean", [("fer2013", tmp_path / "fer2013.csv", True)], "data.image_size=64"
    )
    report = clean(params.clean, params.data, progress=False)
    manifest = read_manifest(tmp_path / "clean")
    assert [row["usage"] for row in manifest[:3]] == ["train", "val", "test"]
    assert [row["label"] for row in manifest[:3]] == ["happy", "sad", "neutral"]
    assert [row["reason"] for row in manifest[3:]] == ["malformed_row", "malformed_row"]
    assert "pixels" in manifest[3]["detail"]
    assert report.kept == 3 and report.dropped["malformed_row"] == 2
    face = Image.open(tmp_path / "clean" / manifest[0]["path"])
    assert face.size == (64, 64) and face.mode == "L"
    assert manifest[0]["sha256"] == content_sha256(np.asarray(face))


def test_rerun_replaces_outputs_and_refuses_foreign_folders(tmp_path: Path) -> None:
    source = tmp_path / "faces"
    (source / "happy").mkdir(parents=True)
    happy = sorted((SAMPLE / "train" / "happy").glob("*.jpg"))
    for path in happy[:4]:
        shutil.copy(path, source / "happy" / path.name)
    params = clean_params(tmp_path / "clean", [("faces", source, True)])
    clean(params.clean, params.data, progress=False)
    first = {row["path"] for row in read_manifest(tmp_path / "clean")}
    (source / "happy" / happy[0].name).unlink()
    shutil.copy(happy[5], source / "happy" / happy[5].name)
    clean(params.clean, params.data, progress=False)
    second = {row["path"] for row in read_manifest(tmp_path / "clean")}
    assert len(first) == len(second) == 4 and first != second
    on_disk = {str(path.relative_to(tmp_path / "clean")) for path in (tmp_path / "clean").rglob("*.png")}
    assert on_disk == second

    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a previous output"):
        params = clean_params(foreign, [("faces", source, True)])
        clean(params.clean, params.data, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="inside source"):
        params = clean_params(source / "clean", [("faces", source, True)])
        clean(params.clean, params.data, progress=False)


def test_keeping_near_duplicates_still_drops_exact_ones(tmp_path: Path) -> None:
    source = tmp_path / "faces"
    (source / "happy").mkdir(parents=True)
    face = Image.open(sorted((SAMPLE / "train" / "happy").glob("*.jpg"))[0]).convert("L")
    face.save(source / "happy" / "a.png")
    face.save(source / "happy" / "b.bmp")  # same pixels, another container
    ImageEnhance.Brightness(face).enhance(1.1).save(source / "happy" / "c.png")
    params = clean_params(tmp_path / "clean", [("faces", source, True)], "clean.near_duplicate_distance=-1")
    clean(params.clean, params.data, progress=False)
    reasons = {row["original"]: row["reason"] for row in read_manifest(tmp_path / "clean")}
    assert reasons == {"happy/a.png": "", "happy/b.bmp": "duplicate", "happy/c.png": ""}
    groups = {row["original"]: row["group"] for row in read_manifest(tmp_path / "clean")}
    assert groups["happy/a.png"] == groups["happy/c.png"]


def test_decode_gray_scales_16_bit_and_composites_alpha(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    decoded = decode_gray(tmp_path / "deep.png").gray
    assert decoded.dtype == np.uint8 and decoded.min() == 0 and decoded.max() == 255
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert decode_gray(tmp_path / "clear.png").gray.min() == 255


def test_near_duplicate_search_matches_brute_force() -> None:
    generator = np.random.default_rng(1)
    for bits, distance in ((64, 4), (64, 12), (256, 6)):
        base = generator.integers(0, 2, (1500, bits), dtype=np.uint8)
        edited = base[:300].copy()
        for row in edited:
            row[generator.choice(bits, generator.integers(0, distance + 3), replace=False)] ^= 1
        packed = np.packbits(np.concatenate([base, edited, base[:50]]), axis=1)
        graph = near_duplicate_graph(packed, distance)
        distances = hamming_distances(packed[:, None, :], packed[None, :, :])
        first, second = np.nonzero(np.triu(distances <= distance, k=1))
        expected = {(int(a), int(b)) for a, b in zip(first, second, strict=True)}
        found = set()
        for (low, high), _ in zip(graph.pairs.tolist(), graph.distances.tolist(), strict=True):
            members_low = np.flatnonzero(graph.hash_index == low)
            members_high = np.flatnonzero(graph.hash_index == high)
            found |= {(int(min(a, b)), int(max(a, b))) for a in members_low for b in members_high}
        for index in np.unique(graph.hash_index):
            members = np.flatnonzero(graph.hash_index == index)
            found |= {(int(a), int(b)) for a in members for b in members if a < b}
        assert found == expected, (bits, distance)


def test_box_geometry_and_merging() -> None:
    face = Box(5, 10, 40, 40)
    window = face.square_with_margin(0.25, 200, 100)
    assert window.width == window.height == 60 and window.x == 0 and window.y == 0
    assert face.square_with_margin(0.5, 50, 60).width == 50
    nested = [Box(100, 100, 80, 80), Box(110, 110, 60, 60), Box(300, 100, 70, 70)]
    assert merge_overlapping(nested) == [Box(100, 100, 80, 80), Box(300, 100, 70, 70)]
    assert set(REASONS) >= {"no_face", "blurry", "label_conflict"}
