"""Classification metrics computed with numpy alone: confusion matrix, per-class scores, reports.

Labels are integer class indices into a ``classes`` sequence (index ``i`` is ``classes[i]``).
Undefined ratios (a class never predicted, or with no samples) score 0.0, as scikit-learn does
with ``zero_division=0``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)


def _validated_labels(labels: ArrayLike, name: str, num_classes: int) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array after checking every label is a class index.

    Args:
        labels: Class indices, one per sample.
        name: Argument name used in error messages (``"y_true"`` or ``"y_pred"``).
        num_classes: Number of classes; valid labels lie in ``[0, num_classes)``.

    Returns:
        The labels as a 1-D int64 array.

    Raises:
        ValueError: If the labels are not a 1-D integer array or any label is out of range.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size == 0:
        # np.asarray([]) is float64; an empty array has no labels to get wrong.
        return array.astype(np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    out_of_range = (array < 0) | (array >= num_classes)
    if out_of_range.any():
        bad_values = sorted({int(value) for value in array[out_of_range]})
        raise ValueError(
            f"{name} has {int(out_of_range.sum())} label(s) outside [0, {num_classes}): "
            f"{bad_values[:10]}{' ...' if len(bad_values) > 10 else ''}"
        )
    return array


def _validated_pair(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate actual and predicted labels together (see :func:`_validated_labels`).

    Returns:
        ``(y_true, y_pred)`` as 1-D int64 arrays of equal length.

    Raises:
        ValueError: If ``num_classes`` is not positive, the lengths differ or a label is invalid.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    true_labels = _validated_labels(y_true, "y_true", num_classes)
    predicted_labels = _validated_labels(y_pred, "y_pred", num_classes)
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {true_labels.size} and {predicted_labels.size}"
        )
    return true_labels, predicted_labels


def _validated_classes(classes: Sequence[str]) -> list[str]:
    """Check class names are non-empty and unique (they become dictionary keys).

    Returns:
        The class names as a list of strings.

    Raises:
        ValueError: If there are no classes or a name repeats.
    """
    names = [str(name) for name in classes]
    if not names:
        raise ValueError("classes must name at least one class")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"class names must be unique, repeated: {duplicates}")
    return names


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Count samples per (actual, predicted) class pair.

    Args:
        y_true: Actual class indices, one per sample.
        y_pred: Predicted class indices, one per sample.
        num_classes: Number of classes; labels must lie in ``[0, num_classes)``.

    Returns:
        An int64 array of shape ``(num_classes, num_classes)``; entry ``[i, j]`` counts samples of
        actual class ``i`` predicted as class ``j`` (rows are actual, columns predicted).

    Raises:
        ValueError: If the labels are not 1-D integer arrays of equal length, a label is out of
            range, or ``num_classes`` is not positive.
    """
    true_labels, predicted_labels = _validated_pair(y_true, y_pred, num_classes)
    flat_counts = np.bincount(true_labels * num_classes + predicted_labels, minlength=num_classes**2)
    return flat_counts.reshape(num_classes, num_classes).astype(np.int64)


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one class.

    Attributes:
        precision: Correct predictions of the class over all predictions of it (0.0 if never predicted).
        recall: Correct predictions of the class over its samples (0.0 if it has none).
        f1: Harmonic mean of precision and recall (0.0 if both are 0.0).
        support: Number of samples whose actual class is this one.
    """

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    """Summary of a classifier's predictions on a labelled set.

    Attributes:
        accuracy: Fraction of samples predicted correctly.
        macro_f1: Unweighted mean of the per-class F1 scores over every class in ``classes``.
        weighted_f1: Mean of the per-class F1 scores weighted by support.
        per_class: Scores per class name, in ``classes`` order.
        confusion: Confusion matrix as nested lists; rows are actual, columns predicted classes.
        classes: Class names; index ``i`` names row and column ``i`` of ``confusion``.
        num_samples: Number of samples scored.
    """

    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    classes: list[str]
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dictionary.

        Returns:
            A dictionary with keys ``accuracy``, ``macro_f1``, ``weighted_f1``, ``num_samples``,
            ``classes``, ``per_class`` (``{name: {precision, recall, f1, support}}``) and
            ``confusion_matrix``.
        """
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "num_samples": self.num_samples,
            "classes": list(self.classes),
            "per_class": {
                name: {
                    "precision": scores.precision,
                    "recall": scores.recall,
                    "f1": scores.f1,
                    "support": scores.support,
                }
                for name, scores in self.per_class.items()
            },
            "confusion_matrix": [list(row) for row in self.confusion],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassificationReport:
        """Rebuild a report from :meth:`to_dict` output; extra top-level keys are ignored.

        Args:
            data: A dictionary as produced by :meth:`to_dict`, e.g. loaded from a report JSON.

        Returns:
            The report.

        Raises:
            ValueError: If a required key is missing or a value has the wrong type or shape.
        """
        required = ("accuracy", "macro_f1", "weighted_f1", "num_samples", "classes", "per_class")
        missing = [key for key in (*required, "confusion_matrix") if key not in data]
        if missing:
            raise ValueError(f"report is missing key(s): {missing}")
        try:
            classes = [str(name) for name in data["classes"]]
            per_class = {
                str(name): ClassMetrics(
                    precision=float(scores["precision"]),
                    recall=float(scores["recall"]),
                    f1=float(scores["f1"]),
                    support=int(scores["support"]),
                )
                for name, scores in data["per_class"].items()
            }
            confusion = [[int(count) for count in row] for row in data["confusion_matrix"]]
            report = cls(
                accuracy=float(data["accuracy"]),
                macro_f1=float(data["macro_f1"]),
                weighted_f1=float(data["weighted_f1"]),
                per_class=per_class,
                confusion=confusion,
                classes=classes,
                num_samples=int(data["num_samples"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"report has a malformed value: {error!r}") from error
        num_classes = len(classes)
        if len(confusion) != num_classes or any(len(row) != num_classes for row in confusion):
            raise ValueError(f"report's confusion_matrix is not {num_classes}x{num_classes} like its classes")
        return report


def classification_report(
    y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str]
) -> ClassificationReport:
    """Score predictions: accuracy, per-class precision/recall/F1, macro and weighted F1.

    Macro-F1 averages over every class in ``classes``, including classes with neither samples
    nor predictions (they score 0.0), as scikit-learn's ``f1_score(labels=..., average="macro",
    zero_division=0)`` does. This keeps macro-F1 comparable between evaluation sets scored on
    the same class list, at the cost of penalising a class absent from a small set.

    Args:
        y_true: Actual class indices, one per sample.
        y_pred: Predicted class indices, one per sample.
        classes: Class names; label ``i`` is ``classes[i]``.

    Returns:
        The classification report.

    Raises:
        ValueError: If there are no samples, no classes, repeated class names, labels of
            different lengths, or a label outside ``[0, len(classes))``.
    """
    names = _validated_classes(classes)
    confusion = confusion_matrix(y_true, y_pred, len(names))
    num_samples = int(confusion.sum())
    if num_samples == 0:
        raise ValueError("cannot score an empty set: y_true and y_pred hold no samples")

    true_positives = np.diag(confusion).astype(np.float64)
    predicted_counts = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + support); equals the harmonic mean of
    # precision and recall whenever both are defined and is 0 when TP is 0.
    precision = _safe_ratio(true_positives, predicted_counts)
    recall = _safe_ratio(true_positives, support.astype(np.float64))
    f1 = _safe_ratio(2.0 * true_positives, predicted_counts + support)

    per_class = {
        name: ClassMetrics(
            precision=float(precision[index]),
            recall=float(recall[index]),
            f1=float(f1[index]),
            support=int(support[index]),
        )
        for index, name in enumerate(names)
    }
    report = ClassificationReport(
        accuracy=float(true_positives.sum() / num_samples),
        macro_f1=float(f1.mean()),
        weighted_f1=float((f1 * support).sum() / num_samples),
        per_class=per_class,
        confusion=confusion.tolist(),
        classes=names,
        num_samples=num_samples,
    )
    logger.debug(
        "Scored %d samples: accuracy %.4f, macro-F1 %.4f", num_samples, report.accuracy, report.macro_f1
    )
    return report


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0.0 where the denominator is 0."""
    ratio = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=ratio, where=denominator > 0)
    return ratio


def dvc_confusion_rows(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str]) -> list[dict[str, str]]:
    """Turn predictions into rows for DVC's ``confusion`` plot template.

    Args:
        y_true: Actual class indices, one per sample.
        y_pred: Predicted class indices, one per sample.
        classes: Class names; label ``i`` is ``classes[i]``.

    Returns:
        One ``{"actual": name, "predicted": name}`` dictionary per sample, in sample order.

    Raises:
        ValueError: If the classes or labels are invalid (see :func:`classification_report`).
    """
    names = _validated_classes(classes)
    true_labels, predicted_labels = _validated_pair(y_true, y_pred, len(names))
    return [
        {"actual": names[actual], "predicted": names[predicted]}
        for actual, predicted in zip(true_labels.tolist(), predicted_labels.tolist(), strict=True)
    ]
