"""The [quality] training curves: committed data, bench/dvc.yaml in step with it, and DVC renders them.

bench/quality_matrix.py writes one curve per budgeted run (bench/results/curves/<N>min/<config>.json)
and bench/dvc.yaml, the DVC plots that draw them next to the pipeline's own (dvc.yaml), and renders
each budget's table (bench/results/quality_<N>min.md) from its record of rows (quality_<N>min.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
CURVES = BENCH / "results" / "curves"
sys.path.insert(0, str(BENCH))

import quality_matrix  # noqa: E402

from emonext.fileio import write_json  # noqa: E402


def curve_files() -> list[Path]:
    return sorted(CURVES.glob("*min/*.json"))


def plot_ids() -> list[str]:
    document = yaml.safe_load((BENCH / "dvc.yaml").read_text())
    return [next(iter(plot)) for plot in document["plots"]]


def test_curves_are_epoch_series_within_their_budget() -> None:
    assert curve_files(), "no committed curves"
    for path in curve_files():
        points = json.loads(path.read_text())
        budget = float(path.parent.name.removesuffix("min"))
        assert [point["epoch"] for point in points] == list(range(1, len(points) + 1)), path
        minutes = [point["minutes"] for point in points]
        assert minutes == sorted(minutes) and minutes[-1] <= budget * 1.15, path
        assert all(0.0 < point["val_accuracy"] < 1.0 for point in points), path
        assert path.stem in quality_matrix.CONFIGS, f"{path}: not a configuration of quality_matrix.py"


def test_dvc_plots_file_matches_the_curves() -> None:
    """bench/dvc.yaml is what quality_matrix.py writes for the committed curves: none left out."""
    assert (BENCH / "dvc.yaml").read_text() == quality_matrix.dvc_plots(CURVES, BENCH)
    listed = {
        file
        for plot in yaml.safe_load((BENCH / "dvc.yaml").read_text())["plots"]
        for file in next(iter(plot.values()))["y"]
    }
    assert listed == {path.relative_to(BENCH).as_posix() for path in curve_files()}
    assert len(plot_ids()) == 2 * len({path.parent.name for path in curve_files()})


def test_curve_of_a_real_run_is_written_and_plotted(trained_run: Path, tmp_path: Path) -> None:
    """The writer itself, on the metrics.json of a real (tiny) training run, not the committed output."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    curves = tmp_path / "curves"
    path = quality_matrix.write_curve(trained_run.name, 10, trained_run.parent, curves)
    assert path == curves / "10min" / f"{trained_run.name}.json"
    points = json.loads(path.read_text())
    assert [point["epoch"] for point in points] == [row["epoch"] for row in metrics]
    assert [point["val_accuracy"] for point in points] == [round(row["val_accuracy"], 5) for row in metrics]
    plots = yaml.safe_load(quality_matrix.dvc_plots(curves, tmp_path))["plots"]
    assert [next(iter(plot)) for plot in plots] == [
        "quality_10min_val_accuracy_vs_epoch",
        "quality_10min_val_accuracy_vs_minutes",
    ]
    assert all(
        next(iter(plot.values()))["y"] == {f"curves/10min/{path.name}": "val_accuracy"} for plot in plots
    )


@pytest.mark.slow
def test_dvc_renders_the_quality_plots(tmp_path: Path) -> None:
    ids = plot_ids()
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json", "-o", str(tmp_path), *ids],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    plots = json.loads(shown.stdout)
    assert not plots.get("errors"), plots["errors"]
    assert set(plots["data"]) == set(ids)
    for plot_id in ids:
        budget = plot_id.split("_")[1]  # quality_<N>min_val_accuracy_vs_...
        curves = sorted(CURVES.glob(f"{budget}/*.json"))
        values = plots["data"][plot_id][0]["content"]["data"]["values"]
        # Every point of every curve is drawn; DVC names the file of each point only when there are several.
        assert len(values) == sum(len(json.loads(path.read_text())) for path in curves), plot_id
        if len(curves) > 1:
            assert {value["filename"] for value in values} == {path.name for path in curves}, plot_id


def test_recipe_and_ablation_rows_train_emonext_whatever_the_default() -> None:
    """params.yaml's default architecture is resnet18; rows train EmoNeXt unless they name another."""
    for name, (group, overrides) in quality_matrix.CONFIGS.items():
        arch = [
            item for item in quality_matrix.with_architecture(overrides) if item.startswith("model.arch=")
        ]
        chosen = [item for item in overrides if item.startswith("model.arch=")]
        if group == "baseline":
            assert chosen == [f"model.arch={name}"], name
        elif group == "ablation":
            assert not chosen, name
        expected = chosen[0] if chosen else "model.arch=emonext"
        assert arch == [expected], name
    assert quality_matrix.with_architecture(["model.arch=resnet18", "train.lr=1e-3"]) == [
        "model.arch=resnet18",
        "train.lr=1e-3",
    ]


@pytest.mark.parametrize("minutes", [10, 60])
def test_committed_table_is_its_record_rendered(minutes: int) -> None:
    """Each results table is exactly its record's rows, in the order of CONFIGS, each row with its curve."""
    table = BENCH / "results" / f"quality_{minutes}min.md"
    record = json.loads(table.with_suffix(".json").read_text())
    rendered = quality_matrix.render(
        record["rows"], minutes, record["note"], record["written"], record["machine"]
    )
    assert table.read_text() == rendered
    names = [row["name"] for row in record["rows"]]
    assert names == [name for name in quality_matrix.CONFIGS if name in names]
    for row in record["rows"]:
        assert f"--minutes {minutes} --out runs/quality/{minutes}min/{row['name']}" in row["command"], row[
            "name"
        ]
        assert (CURVES / f"{minutes}min" / f"{row['name']}.json").is_file(), row["name"]


def test_report_keeps_rows_of_earlier_checkouts_and_replaces_rerun_ones(
    trained_run: Path, tmp_path: Path
) -> None:
    """A row whose run folder is gone stays in the table; a configuration run again replaces its row."""

    def recorded_row(name: str, accuracy: float) -> dict[str, object]:
        return {
            "name": name,
            "group": "baseline",
            "overrides": f"model.arch={name}",
            "best_val_accuracy": accuracy,
            "best_val_macro_f1": 0.5,
            "best_epoch": 3,
            "epochs_run": 3,
            "planned_epochs": 3,
            "train_minutes": 9.5,
            "command": f"python bench/budgeted_run.py --minutes 10 --out runs/quality/10min/{name}",
        }

    out = tmp_path / "results" / "quality_10min.md"
    out.parent.mkdir()
    write_json(
        out.with_suffix(".json"),
        {
            "minutes": 10.0,
            "machine": "earlier machine",
            "written": "2026-01-01 00:00 UTC",
            "note": "Measured in an earlier checkout.",
            "rows": [recorded_row("resnet18", 0.11), recorded_row("densenet121", 0.52)],
        },
    )
    work = tmp_path / "work"
    shutil.copytree(trained_run, work / "resnet18")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    write_json(
        work / "resnet18" / "budgeted_run.json",
        {
            "epochs_run": metrics[-1]["epoch"],
            "train_minutes": metrics[-1]["minutes_total"],
            "planned_epochs": metrics[-1]["epoch"],
            "overrides": ["model.arch=resnet18"],
        },
    )
    plots = tmp_path / "dvc.yaml"

    rows = quality_matrix.report(10, work, out, tmp_path / "curves", "", plots=plots)

    assert [row["name"] for row in rows] == ["resnet18", "densenet121"]
    best = max(row["val_accuracy"] for row in metrics)
    assert rows[0]["best_val_accuracy"] == best and rows[0]["command"].startswith(
        f"python bench/budgeted_run.py --minutes 10 --out {work / 'resnet18'}"
    )
    assert rows[1] == recorded_row("densenet121", 0.52)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["rows"] == rows and record["note"] == "Measured in an earlier checkout."
    table = out.read_text()
    assert f"| resnet18 | baseline | `model.arch=resnet18` | {best:.4f} |" in table
    assert (
        "| densenet121 | baseline | `model.arch=densenet121` | 0.5200 | 0.5000 | 3 | 3 / 3 | 9.5 |" in table
    )
    assert table.endswith("Measured in an earlier checkout.\n")
    # Only the configuration that ran gets a (new) curve; the plots draw what the curves folder holds.
    assert sorted(path.name for path in (tmp_path / "curves").rglob("*.json")) == ["resnet18.json"]
    assert "curves/10min/resnet18.json" in plots.read_text()
