"""Tests for emonext.evaluation: metrics against hand-computed values, plots and comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emonext.evaluation.compare import (
    ComparisonRow,
    comparison_markdown,
    load_reports,
    write_comparison,
)
from emonext.evaluation.metrics import (
    ClassificationReport,
    ClassMetrics,
    classification_report,
    confusion_matrix,
    dvc_confusion_rows,
)
from emonext.evaluation.plots import plot_comparison, plot_confusion_matrix
from emonext.fileio import write_atomically

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Hand-worked 3-class example.
#   y_true: 0 0 0 0 1 1 1 2 2 2
#   y_pred: 0 0 1 2 1 1 0 2 2 1
# Confusion (rows actual, columns predicted):
#   angry  [2, 1, 1]   support 4
#   happy  [1, 2, 0]   support 3
#   sad    [0, 1, 2]   support 3
# Column sums (predictions): 3, 4, 3.  Correct: 2 + 2 + 2 = 6 of 10 -> accuracy 0.6.
# precision = 2/3, 2/4, 2/3;  recall = 2/4, 2/3, 2/3
# F1 = 2TP / (predicted + support) = 4/7, 4/7, 4/6
# macro-F1 = (4/7 + 4/7 + 2/3) / 3 = 38/63
# weighted-F1 = (4 * 4/7 + 3 * 4/7 + 3 * 2/3) / 10 = (4 + 2) / 10 = 0.6
CLASSES = ["angry", "happy", "sad"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])


def test_confusion_matrix_matches_hand_count() -> None:
    matrix = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3)

    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, [[2, 1, 1], [1, 2, 0], [0, 1, 2]])


def test_confusion_matrix_rows_are_actual_and_columns_predicted() -> None:
    # One "angry" image predicted "sad" must land in row 0, column 2 — never the transpose.
    matrix = confusion_matrix(np.array([0]), np.array([2]), num_classes=3)

    assert matrix[0, 2] == 1
    assert matrix.sum() == 1


def test_confusion_matrix_of_no_samples_is_all_zero() -> None:
    np.testing.assert_array_equal(confusion_matrix(np.array([]), np.array([]), 2), np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (np.array([0, 3]), np.array([0, 1]), r"y_true .*outside \[0, 3\).*\[3\]"),
        (np.array([0, 1]), np.array([-1, 1]), r"y_pred .*outside \[0, 3\).*\[-1\]"),
        (np.array([0, 1, 2]), np.array([0, 1]), "same length"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer class indices"),
        (np.array([[0, 1]]), np.array([[0, 1]]), "1-D"),
    ],
)
def test_confusion_matrix_rejects_invalid_labels(
    y_true: np.ndarray, y_pred: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(y_true, y_pred, num_classes=3)


def test_confusion_matrix_rejects_non_positive_class_count() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(np.array([0]), np.array([0]), num_classes=0)


def test_classification_report_matches_hand_computed_scores() -> None:
    report = classification_report(Y_TRUE, Y_PRED, CLASSES)

    assert report.num_samples == 10
    assert report.accuracy == pytest.approx(0.6)
    assert report.macro_f1 == pytest.approx(38 / 63)
    assert report.weighted_f1 == pytest.approx(0.6)
    assert report.classes == CLASSES
    assert report.confusion == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert list(report.per_class) == CLASSES
    scores = {name: (m.precision, m.recall, m.f1, m.support) for name, m in report.per_class.items()}
    assert scores["angry"] == pytest.approx((2 / 3, 1 / 2, 4 / 7, 4))
    assert scores["happy"] == pytest.approx((2 / 4, 2 / 3, 4 / 7, 3))
    assert scores["sad"] == pytest.approx((2 / 3, 2 / 3, 4 / 6, 3))


def test_classification_report_scores_undefined_ratios_as_zero() -> None:
    # "a": TP 2, predicted 3, support 2 -> precision 2/3, recall 1, F1 4/5.
    # "b": support 1 but never predicted -> precision 0 (0/0), recall 0, F1 0.
    # "c": no samples and never predicted -> everything 0, still counted in the macro average.
    report = classification_report(np.array([0, 0, 1]), np.array([0, 0, 0]), ["a", "b", "c"])

    assert report.per_class["a"].precision == pytest.approx(2 / 3)
    assert report.per_class["a"].recall == pytest.approx(1.0)
    assert report.per_class["a"].f1 == pytest.approx(0.8)
    assert report.per_class["b"] == ClassMetrics(precision=0.0, recall=0.0, f1=0.0, support=1)
    assert report.per_class["c"] == ClassMetrics(precision=0.0, recall=0.0, f1=0.0, support=0)
    assert report.accuracy == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx(0.8 / 3)
    assert report.weighted_f1 == pytest.approx(0.8 * 2 / 3)


def test_classification_report_perfect_predictions_score_one() -> None:
    labels = np.array([0, 1, 2, 2, 1])
    report = classification_report(labels, labels, CLASSES)

    assert report.accuracy == 1.0
    assert report.macro_f1 == 1.0
    assert all(scores.f1 == 1.0 for scores in report.per_class.values())


def test_classification_report_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        classification_report(np.array([], dtype=np.int64), np.array([], dtype=np.int64), CLASSES)


def test_classification_report_rejects_repeated_class_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        classification_report(Y_TRUE, Y_PRED, ["angry", "happy", "angry"])


def test_classification_report_rejects_labels_beyond_class_list() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_report(Y_TRUE, Y_PRED, ["angry", "happy"])


def test_report_round_trips_through_json() -> None:
    report = classification_report(Y_TRUE, Y_PRED, CLASSES)

    data = json.loads(json.dumps(report.to_dict()))

    assert set(data) == {
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "num_samples",
        "classes",
        "per_class",
        "confusion_matrix",
    }
    assert data["per_class"]["happy"] == {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    assert data["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert ClassificationReport.from_dict(data) == report


def test_report_from_dict_ignores_extra_keys_and_names_missing_ones() -> None:
    data = classification_report(Y_TRUE, Y_PRED, CLASSES).to_dict()
    assert ClassificationReport.from_dict({**data, "model": "emonext_tiny"}).accuracy == pytest.approx(0.6)

    del data["macro_f1"]
    with pytest.raises(ValueError, match="macro_f1"):
        ClassificationReport.from_dict(data)


def test_dvc_confusion_rows_name_each_sample() -> None:
    rows = dvc_confusion_rows(np.array([0, 1, 2]), np.array([0, 2, 1]), CLASSES)

    assert rows == [
        {"actual": "angry", "predicted": "angry"},
        {"actual": "happy", "predicted": "sad"},
        {"actual": "sad", "predicted": "happy"},
    ]
    json.dumps(rows)  # DVC reads these from a JSON file


def test_dvc_confusion_rows_reject_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="y_pred"):
        dvc_confusion_rows(np.array([0]), np.array([5]), CLASSES)


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_png_is_a_readable_image(tmp_path: Path, normalize: bool) -> None:
    path = tmp_path / "plots" / "confusion.png"
    report = classification_report(Y_TRUE, Y_PRED, CLASSES)

    returned = plot_confusion_matrix(report.confusion, CLASSES, path, normalize=normalize)

    assert returned == path
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    # 3 classes: side 0.9 * 3 + 2.5 = 5.2 in, +1 in for the colour bar -> 6.2 x 5.2 in at 120 dpi.
    assert (width, height) == (744, 624)
    assert [child.name for child in path.parent.iterdir()] == ["confusion.png"]  # no temp file left


def test_confusion_plot_rejects_mismatched_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 classes"):
        plot_confusion_matrix(np.eye(2, dtype=int), CLASSES, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_write_atomically_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    write_atomically(path, b"new")

    assert path.read_bytes() == b"new"
    assert [child.name for child in tmp_path.iterdir()] == ["out.txt"]


def _row(name: str, accuracy: float, macro_f1: float = 0.5, num_samples: int = 100) -> ComparisonRow:
    return ComparisonRow(
        name=name, accuracy=accuracy, macro_f1=macro_f1, num_samples=num_samples, source=f"{name}.json"
    )


def test_comparison_markdown_sorts_by_accuracy_descending() -> None:
    rows = [_row("resnet", 0.6512), _row("emonext", 0.7311, macro_f1=0.7012), _row("vgg", 0.6890)]

    lines = comparison_markdown(rows).splitlines()

    assert lines[0] == "| model | accuracy % | macro-F1 % | images |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["emonext", "vgg", "resnet"]
    assert lines[2] == "| emonext | 73.11 | 70.12 | 100 |"


def test_plot_comparison_writes_png(tmp_path: Path) -> None:
    path = plot_comparison([_row("a", 0.5), _row("b", 0.75)], tmp_path / "cmp.png", metric="macro_f1")

    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="metric"):
        plot_comparison([_row("a", 0.5)], tmp_path / "x.png", metric="loss")
    with pytest.raises(ValueError, match="no models"):
        plot_comparison([], tmp_path / "x.png")


def _write_report(folder: Path, y_pred: np.ndarray, y_true: np.ndarray = Y_TRUE, **extra: object) -> Path:
    folder.mkdir(parents=True)
    path = folder / "report.json"
    report = classification_report(y_true, y_pred, CLASSES)
    path.write_text(json.dumps({**report.to_dict(), **extra}))
    return path


def test_load_reports_names_rows_by_key_or_folder(tmp_path: Path) -> None:
    named = _write_report(tmp_path / "run1", Y_PRED, name="emonext_tiny", model="emonext")
    unnamed = _write_report(tmp_path / "baseline_resnet", Y_TRUE)

    rows = load_reports([named, unnamed])

    assert [row.name for row in rows] == ["emonext_tiny", "baseline_resnet"]
    assert rows[0].accuracy == pytest.approx(0.6)
    assert rows[0].macro_f1 == pytest.approx(38 / 63)
    assert rows[1].accuracy == 1.0
    assert rows[0].num_samples == 10
    assert rows[0].source == str(named)


def test_load_reports_flags_different_test_sets(tmp_path: Path) -> None:
    full = _write_report(tmp_path / "full", Y_PRED)
    partial = _write_report(tmp_path / "partial", Y_PRED[:5], y_true=Y_TRUE[:5])

    with pytest.raises(ValueError, match="different test sets") as error:
        load_reports([full, partial])
    assert str(full) in str(error.value)
    assert str(partial) in str(error.value)

    rows = load_reports([full, partial], allow_mismatch=True)
    assert [row.num_samples for row in rows] == [10, 5]


def test_load_reports_flags_different_classes(tmp_path: Path) -> None:
    first = _write_report(tmp_path / "first", Y_PRED)
    second_folder = tmp_path / "second"
    second_folder.mkdir()
    second = second_folder / "report.json"
    other = classification_report(Y_TRUE, Y_PRED, ["anger", "joy", "sadness"])
    second.write_text(json.dumps(other.to_dict()))

    with pytest.raises(ValueError, match="different test sets"):
        load_reports([first, second])


def test_load_reports_names_corrupt_file(tmp_path: Path) -> None:
    good = _write_report(tmp_path / "good", Y_PRED)
    corrupt = tmp_path / "corrupt" / "report.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"accuracy": 0.5,')

    with pytest.raises(ValueError, match="not valid JSON") as error:
        load_reports([good, corrupt])
    assert str(corrupt) in str(error.value)


def test_load_reports_names_missing_or_non_report_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "report.json"
    with pytest.raises(ValueError, match="cannot read") as error:
        load_reports([missing])
    assert str(missing) in str(error.value)

    not_report = tmp_path / "list.json"
    not_report.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object") as error:
        load_reports([not_report])
    assert str(not_report) in str(error.value)

    partial_report = tmp_path / "partial.json"
    partial_report.write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ValueError, match="missing key") as error:
        load_reports([partial_report])
    assert str(partial_report) in str(error.value)


def test_write_comparison_writes_all_three_files(tmp_path: Path) -> None:
    worse = _write_report(tmp_path / "reports" / "worse", Y_PRED)
    better = _write_report(tmp_path / "reports" / "better", Y_TRUE)
    out_dir = tmp_path / "comparison"

    rows = write_comparison([worse, better], out_dir)

    assert [row.name for row in rows] == ["better", "worse"]
    assert sorted(child.name for child in out_dir.iterdir()) == [
        "comparison.json",
        "comparison.md",
        "comparison.png",
    ]
    summary = json.loads((out_dir / "comparison.json").read_text())
    assert [model["name"] for model in summary["models"]] == ["better", "worse"]
    assert summary["models"][1]["accuracy"] == pytest.approx(0.6)
    assert summary["models"][1]["source"] == str(worse)
    markdown = (out_dir / "comparison.md").read_text()
    assert "| better | 100.00 | 100.00 | 10 |" in markdown
    assert "| worse | 60.00 | 60.32 | 10 |" in markdown
    assert (out_dir / "comparison.png").read_bytes()[:8] == PNG_MAGIC


def test_load_reports_rejects_empty_path_list() -> None:
    with pytest.raises(ValueError, match="no report files"):
        load_reports([])
