"""Compare models from their saved classification reports: Markdown table, JSON and bar chart.

Scores are only comparable when every model was evaluated on the same images, so reports with
different class lists or sample counts are refused unless the caller explicitly allows it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from emonext.evaluation.metrics import ClassificationReport
from emonext.evaluation.plots import plot_comparison
from emonext.fileio import write_atomically

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparisonRow:
    """One model's headline scores.

    Attributes:
        name: Model name, from the report's ``"name"`` key or its parent folder.
        accuracy: Fraction of test images classified correctly.
        macro_f1: Unweighted mean of per-class F1 scores.
        num_samples: Number of test images scored.
        source: Path of the report JSON the row was read from.
    """

    name: str
    accuracy: float
    macro_f1: float
    num_samples: int
    source: str


def _read_report(path: Path) -> tuple[dict[str, object], ClassificationReport]:
    """Load a report JSON and parse it.

    Args:
        path: Report file as written from :meth:`ClassificationReport.to_dict`.

    Returns:
        The raw JSON object (with any extra keys) and the parsed report.

    Raises:
        ValueError: If the file cannot be read, is not valid JSON, or is not a report; the
            message names the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read report {path}: {error.strerror or error}") from error
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"report {path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"report {path} must hold a JSON object, got {type(raw).__name__}")
    try:
        report = ClassificationReport.from_dict(raw)
    except ValueError as error:
        raise ValueError(f"report {path} is not a classification report: {error}") from error
    return raw, report


def _model_name(raw: dict[str, object], path: Path) -> str:
    """Name a model by its report's ``"name"`` key, else the report's folder, else the file stem."""
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    return path.absolute().parent.name or path.stem


def load_reports(paths: Sequence[Path], allow_mismatch: bool = False) -> list[ComparisonRow]:
    """Read report JSON files into comparison rows.

    Args:
        paths: Report files, each as written from :meth:`ClassificationReport.to_dict`
            (extra top-level keys such as ``"model"`` or ``"name"`` are allowed).
        allow_mismatch: Accept reports scored on different classes or numbers of images
            (logged as a warning) instead of raising.

    Returns:
        One row per report, in the order given.

    Raises:
        ValueError: If no paths are given, a file is missing or invalid (the message names it),
            or the reports were scored on different classes or sample counts and
            ``allow_mismatch`` is False (the message names the files of each group).
    """
    if not paths:
        raise ValueError("no report files given to compare")

    rows: list[ComparisonRow] = []
    files_by_test_set: dict[tuple[tuple[str, ...], int], list[str]] = {}
    for path in map(Path, paths):
        raw, report = _read_report(path)
        rows.append(
            ComparisonRow(
                name=_model_name(raw, path),
                accuracy=report.accuracy,
                macro_f1=report.macro_f1,
                num_samples=report.num_samples,
                source=str(path),
            )
        )
        test_set = (tuple(report.classes), report.num_samples)
        files_by_test_set.setdefault(test_set, []).append(str(path))

    if len(files_by_test_set) > 1:
        groups = "; ".join(
            f"{len(classes)} classes {list(classes)} and {num_samples} images: {', '.join(files)}"
            for (classes, num_samples), files in files_by_test_set.items()
        )
        message = f"reports were scored on different test sets, so their scores are not comparable: {groups}"
        if not allow_mismatch:
            raise ValueError(message)
        logger.warning("%s", message)

    names = [row.name for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        logger.warning(
            "Several reports share a model name %s; use their 'source' to tell them apart", repeated
        )
    return rows


def _ranked(rows: Sequence[ComparisonRow]) -> list[ComparisonRow]:
    """Sort rows best first: accuracy, then macro-F1 descending, then name for a stable order."""
    return sorted(rows, key=lambda row: (-row.accuracy, -row.macro_f1, row.name))


def comparison_markdown(rows: Sequence[ComparisonRow]) -> str:
    """Format rows as a Markdown table sorted by accuracy, best first.

    Args:
        rows: One row per model.

    Returns:
        The table, columns ``model``, ``accuracy %``, ``macro-F1 %`` and ``images``, ending in a newline.
    """
    lines = ["| model | accuracy % | macro-F1 % | images |", "|---|---:|---:|---:|"]
    for row in _ranked(rows):
        name = row.name.replace("|", "\\|")  # a pipe would split the cell
        lines.append(
            f"| {name} | {100.0 * row.accuracy:.2f} | {100.0 * row.macro_f1:.2f} | {row.num_samples} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    paths: Sequence[Path], out_dir: Path, allow_mismatch: bool = False
) -> list[ComparisonRow]:
    """Compare report files and write ``comparison.md``, ``comparison.json`` and ``comparison.png``.

    Args:
        paths: Report JSON files (see :func:`load_reports`).
        out_dir: Output folder, created if missing; each file is written atomically.
        allow_mismatch: Accept reports scored on different test sets (see :func:`load_reports`).

    Returns:
        The rows, sorted by accuracy, best first.

    Raises:
        ValueError: As :func:`load_reports`.
    """
    rows = _ranked(load_reports(paths, allow_mismatch=allow_mismatch))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    write_atomically(out_dir / "comparison.md", comparison_markdown(rows).encode("utf-8"))
    summary = {"models": [asdict(row) for row in rows]}
    write_atomically(out_dir / "comparison.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    plot_comparison(rows, out_dir / "comparison.png", metric="accuracy")
    logger.info("Compared %d models into %s (best: %s)", len(rows), out_dir, rows[0].name)
    return rows
