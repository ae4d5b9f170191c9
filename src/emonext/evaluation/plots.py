"""PNG figures for evaluation: confusion-matrix heat maps and model-comparison bar charts.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: no global figure state, no GUI backend, safe to call from worker threads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emonext.fileio import write_atomically

if TYPE_CHECKING:
    from emonext.evaluation.compare import ComparisonRow

logger = logging.getLogger(__name__)

_DPI = 120
_COMPARABLE_METRICS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1"}


def _save_png(figure: Figure, path: Path) -> Path:
    """Render ``figure`` as PNG and write it atomically to ``path``.

    Returns:
        ``path``.
    """
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    write_atomically(path, buffer.getvalue())
    logger.info("Wrote %s", path)
    return path


def plot_confusion_matrix(
    confusion: np.ndarray | list[list[int]],
    classes: Sequence[str],
    path: Path,
    normalize: bool = True,
    title: str = "",
) -> Path:
    """Draw a confusion matrix as an annotated heat map and save it as PNG.

    Every cell shows its count and its share of the row (the actual class), so each row's
    percentages are that class's recall and confusions.

    Args:
        confusion: Square matrix of counts; rows are actual, columns predicted classes.
        classes: Class names in row/column order.
        path: Destination PNG file; written atomically, parent folders created.
        normalize: Colour cells by row-normalised share (True) or by raw count (False).
            Row shares keep rare classes readable when the classes are imbalanced.
        title: Figure title; defaults to ``"Confusion matrix"`` with the accuracy.

    Returns:
        ``path``.

    Raises:
        ValueError: If the matrix is not square, does not match ``classes``, or has negative counts.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    num_classes = len(classes)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    if counts.shape[0] != num_classes or num_classes == 0:
        raise ValueError(
            f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} but {num_classes} classes given"
        )
    if (counts < 0).any():
        raise ValueError("confusion matrix has negative counts")

    row_totals = counts.sum(axis=1, keepdims=True)
    row_shares = np.divide(
        counts, row_totals, out=np.zeros(counts.shape, dtype=np.float64), where=row_totals > 0
    )
    colour_values = row_shares if normalize else counts.astype(np.float64)
    colour_max = 1.0 if normalize else max(float(counts.max()), 1.0)

    side = max(4.0, 0.9 * num_classes + 2.5)
    figure = Figure(figsize=(side + 1.0, side), layout="compressed")  # keeps square cells and labels in frame
    axes = figure.add_subplot()
    image = axes.imshow(colour_values, cmap="Blues", vmin=0.0, vmax=colour_max)
    colourbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colourbar.set_label("share of actual class" if normalize else "samples")

    font_size = 9 if num_classes <= 8 else 7
    for row in range(num_classes):
        for column in range(num_classes):
            # Dark cells need light text to stay legible.
            text_colour = "white" if colour_values[row, column] > 0.55 * colour_max else "black"
            axes.text(
                column,
                row,
                f"{counts[row, column]}\n{100.0 * row_shares[row, column]:.1f}%",
                ha="center",
                va="center",
                color=text_colour,
                fontsize=font_size,
            )

    axes.set_xticks(range(num_classes), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(num_classes), labels=list(classes))
    axes.set_xlabel("Predicted")
    axes.set_ylabel("Actual")
    total = int(counts.sum())
    accuracy = float(np.trace(counts)) / total if total else 0.0
    axes.set_title(title or f"Confusion matrix (accuracy {100.0 * accuracy:.2f}%, n={total})")
    return _save_png(figure, Path(path))


def plot_comparison(rows: Sequence[ComparisonRow], path: Path, metric: str = "accuracy") -> Path:
    """Draw a horizontal bar chart of models' scores, best at the top, and save it as PNG.

    Args:
        rows: One row per model (see :class:`emonext.evaluation.compare.ComparisonRow`).
        path: Destination PNG file; written atomically, parent folders created.
        metric: Score to plot: ``"accuracy"`` or ``"macro_f1"``.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``rows`` is empty or ``metric`` is not a comparable score.
    """
    if metric not in _COMPARABLE_METRICS:
        raise ValueError(f"metric must be one of {sorted(_COMPARABLE_METRICS)}, got {metric!r}")
    if not rows:
        raise ValueError("no models to plot")

    # barh draws the first bar at the bottom, so ascending order puts the best model on top.
    ranked = sorted(rows, key=lambda row: (getattr(row, metric), row.name))
    names = [row.name for row in ranked]
    percentages = [100.0 * float(getattr(row, metric)) for row in ranked]

    figure = Figure(figsize=(8.0, max(2.5, 0.5 * len(ranked) + 1.5)), layout="constrained")
    axes = figure.add_subplot()
    bars = axes.barh(names, percentages, color="tab:blue")
    axes.bar_label(bars, labels=[f"{value:.2f}%" for value in percentages], padding=3, fontsize=9)
    axes.set_xlim(0.0, 110.0)  # headroom for the value labels past 100%
    axes.set_xlabel(f"{_COMPARABLE_METRICS[metric]} (%)")
    sample_counts = sorted({row.num_samples for row in ranked})
    subtitle = f"n={sample_counts[0]}" if len(sample_counts) == 1 else "different test sets"
    axes.set_title(f"Model comparison by {_COMPARABLE_METRICS[metric]} ({subtitle})")
    axes.grid(axis="x", alpha=0.3)
    return _save_png(figure, Path(path))
