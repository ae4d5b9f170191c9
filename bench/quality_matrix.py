"""Accuracy per fixed CPU budget: named training configurations, each a budgeted FER2013 run.

Every row is one ``bench/budgeted_run.py --minutes N --set ...`` process on full FER2013 (train,
validated on PublicTest), so each configuration gets the same wall-clock budget on the same
machine, and its command reproduces it. Rows: the candidate CPU recipes, the module ablation
(ConvNeXt alone, + STN, + SE, + self-attention regularisation at a few λ, full EmoNeXt) and the
baselines the EmoNeXt paper compares against. The results go to a Markdown table.

    python bench/quality_matrix.py --minutes 10 --only emonext atto-96 resnet18
    python bench/quality_matrix.py --minutes 60 --group ablation

The table holds every configuration that has run at that budget, earlier invocations and earlier
checkouts too: its rows are recorded in ``bench/results/quality_<N>min.json`` beside it.
Runs are sequential: two at once would share the two cores and each get half the budget's work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml
from machine import cpu_model

from emonext.fileio import write_atomically, write_json

logger = logging.getLogger("bench.quality_matrix")
DVC_PLOTS = Path(__file__).parent / "dvc.yaml"

#: ConvNeXt without any EmoNeXt module: the ablation's starting point.
_CONVNEXT_ALONE = ("model.stn=false", "model.se=false", "model.self_attention=false", "train.sa_lambda=0")

#: name -> (group, overrides of params.yaml). Rows that choose no ``model.arch`` train EmoNeXt
#: (:func:`with_architecture`); ``emonext`` is the ablation's full model with params.yaml's recipe.
CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "atto-48": ("recipe", ("model.input_size=48",)),
    "atto-96": ("recipe", ("model.input_size=96",)),
    "femto-64": ("recipe", ("model.backbone=convnext_femto",)),
    "lr-4e-3": ("recipe", ("train.lr=4e-3",)),
    "lr-1e-3": ("recipe", ("train.lr=1e-3",)),
    "lr-5e-4": ("recipe", ("train.lr=5e-4",)),
    "lr-1e-3-lowreg": (
        "recipe",
        ("train.lr=1e-3", "model.drop_path=0", "train.label_smoothing=0", "augment.random_erasing=0"),
    ),
    # FER2013's native 48 px: resnet18 ends on the same 2x2 map as at 64 px for 0.56x the work.
    "resnet18-48": ("recipe", ("model.arch=resnet18", "model.input_size=48")),
    "convnext": ("ablation", _CONVNEXT_ALONE),
    "convnext+stn": ("ablation", ("model.se=false", "model.self_attention=false", "train.sa_lambda=0")),
    "convnext+se": ("ablation", ("model.stn=false", "model.self_attention=false", "train.sa_lambda=0")),
    "convnext+sa-0.05": ("ablation", ("model.stn=false", "model.se=false", "train.sa_lambda=0.05")),
    "convnext+sa-0.1": ("ablation", ("model.stn=false", "model.se=false", "train.sa_lambda=0.1")),
    "convnext+sa-0.3": ("ablation", ("model.stn=false", "model.se=false", "train.sa_lambda=0.3")),
    "emonext": ("ablation", ()),
    "resnet18": ("baseline", ("model.arch=resnet18",)),
    "vgg19_bn": ("baseline", ("model.arch=vgg19_bn",)),
    "densenet121": ("baseline", ("model.arch=densenet121",)),
}


def with_architecture(overrides: Sequence[str]) -> list[str]:
    """``overrides`` led by ``model.arch=emonext`` unless they choose an architecture themselves.

    The recipe and ablation rows train EmoNeXt whatever params.yaml's default is. Runs recorded
    before the default became resnet18 stored no architecture; they trained EmoNeXt too.
    """
    if any(override.startswith("model.arch=") for override in overrides):
        return list(overrides)
    return ["model.arch=emonext", *overrides]


def run_config(name: str, minutes: float, work: Path, extra: list[str]) -> None:
    """Train one configuration for ``minutes`` in its own process, into ``work/name``."""
    _, overrides = CONFIGS[name]
    command = budgeted_command(minutes, work / name, with_architecture([*overrides, *extra]))
    logger.info("%s: %s", name, shlex.join(command))
    subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL)


def budgeted_command(minutes: float, out: Path, overrides: list[str]) -> list[str]:
    """``bench/budgeted_run.py`` arguments for one row (without the interpreter)."""
    sets = [item for override in overrides for item in ("--set", override)]
    return ["bench/budgeted_run.py", "--minutes", f"{minutes:g}", "--out", str(out), *sets]


def summarize(name: str, minutes: float, work: Path) -> dict[str, object] | None:
    """The row of a configuration that has run into ``work/name``; None when it has not."""
    out = work / name
    if not (out / "budgeted_run.json").is_file():
        return None
    summary = json.loads((out / "budgeted_run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    best = max(metrics, key=lambda row: row["val_accuracy"])
    overrides = with_architecture(summary["overrides"])
    return {
        "name": name,
        "group": CONFIGS[name][0],
        "overrides": " ".join(overrides) or "(params.yaml)",
        "best_val_accuracy": best["val_accuracy"],
        "best_val_macro_f1": best["val_macro_f1"],
        "best_epoch": best["epoch"],
        "epochs_run": summary["epochs_run"],
        "planned_epochs": summary["planned_epochs"],
        "train_minutes": summary["train_minutes"],
        "command": "python " + shlex.join(budgeted_command(minutes, out, overrides)),
    }


def write_curve(name: str, minutes: float, work: Path, curves: Path) -> Path:
    """Val accuracy per epoch and per minute of one row, as a DVC plots file (``bench/dvc.yaml``)."""
    metrics = json.loads((work / name / "metrics.json").read_text())
    points = [
        {
            "epoch": row["epoch"],
            "minutes": round(row["minutes_total"], 3),
            "val_accuracy": round(row["val_accuracy"], 5),
            "train_accuracy": round(row["train_accuracy"], 5),
        }
        for row in metrics
    ]
    path = curves / f"{minutes:g}min" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, points)


def dvc_plots(curves: Path, base: Path) -> str:
    """``bench/dvc.yaml``: val accuracy vs epoch and vs minutes per budget, a line per configuration.

    Args:
        curves: Folder of ``<N>min/<config>.json`` curves (:func:`write_curve`).
        base: Folder of the dvc.yaml; its plot files are relative to it.
    """
    plots: list[dict[str, object]] = []
    budgets = sorted(
        (path for path in curves.glob("*min") if path.is_dir()), key=lambda p: float(p.name[:-3])
    )
    for budget in budgets:
        files = [
            Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
            for path in sorted(budget.glob("*.json"))
        ]
        for x, label in (("epoch", "epoch"), ("minutes", "minutes of training")):
            plots.append(
                {
                    f"quality_{budget.name}_val_accuracy_vs_{x}": {
                        "template": "linear",
                        "x": x,
                        "y": dict.fromkeys(files, "val_accuracy"),
                        "title": f"FER2013 val accuracy per {label}, {budget.name[:-3]}-minute CPU budget",
                        "x_label": label,
                        "y_label": "val accuracy",
                    }
                }
            )
    header = (
        "# Written by bench/quality_matrix.py: the training curves of the [quality] runs, one line per\n"
        "# configuration. `dvc plots show` renders them with the pipeline's plots (../dvc.yaml).\n"
    )
    return header + yaml.safe_dump({"plots": plots}, sort_keys=False, width=120)


def render(rows: list[dict[str, object]], minutes: float, note: str, when: str, machine: str) -> str:
    """The results as Markdown: one table, then the command of every row."""
    lines = [
        f"# FER2013 val accuracy per {minutes:g}-minute CPU budget",
        "",
        f"`python bench/quality_matrix.py --minutes {minutes:g} ...` on {cpu_model()}, {when}. "
        "Train: FER2013 train (28,709 faces); val: PublicTest (3,589). Each row is one process; "
        "`train.max_minutes` stops it after the epoch that reaches the budget.",
        "",
        "| config | group | overrides | best val acc | macro-F1 | best epoch | epochs run / planned "
        "| train min |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['group']} | `{row['overrides']}` | {row['best_val_accuracy']:.4f} | "
            f"{row['best_val_macro_f1']:.4f} | {row['best_epoch']} | "
            f"{row['epochs_run']} / {row['planned_epochs']} | {row['train_minutes']:.1f} |"
        )
    lines += ["", "Commands:", ""] + [f"    {row['command']}" for row in rows]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def read_record(record: Path) -> dict[str, object]:
    """A budget's record (``quality_<N>min.json``: its rows and note); empty when there is none."""
    if not record.is_file():
        return {"note": "", "rows": []}
    return json.loads(record.read_text())


def report(
    minutes: float, work: Path, out: Path, curves: Path, note: str, plots: Path = DVC_PLOTS
) -> list[dict[str, object]]:
    """Write the table and the curves of every configuration run so far at this budget.

    The rows live in a record beside the table (``out`` with a ``.json`` suffix), so rows measured
    in an earlier checkout, whose run folders are gone, stay in the table; a configuration that has
    run into ``work`` replaces its recorded row. The note, too, stays unless a new one is given.
    ``plots`` is the dvc.yaml that draws the curves.
    """
    record_path = out.with_suffix(".json")
    record = read_record(record_path)
    recorded = {str(row["name"]): row for row in record["rows"]}  # type: ignore[union-attr]
    measured = {name: row for name in CONFIGS if (row := summarize(name, minutes, work))}
    rows = [measured.get(name) or recorded[name] for name in CONFIGS if name in measured or name in recorded]
    note = note or str(record["note"])
    when, machine = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), cpu_model()
    write_json(
        record_path, {"minutes": minutes, "machine": machine, "written": when, "note": note, "rows": rows}
    )
    write_atomically(out, render(rows, minutes, note, when, machine))
    for name in measured:
        write_curve(name, minutes, work, curves)
    write_atomically(plots, dvc_plots(curves, plots.parent))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="these configurations")
    parser.add_argument("--group", choices=["recipe", "ablation", "baseline"], help="one group")
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    parser.add_argument("--out", type=Path, help="results file (default bench/results/quality_<N>min.md)")
    parser.add_argument("--curves", type=Path, default=Path("bench/results/curves"), help="DVC plots data")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="for every row")
    parser.add_argument("--note", default="")
    parser.add_argument("--report-only", action="store_true", help="rewrite table and curves, train nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    names = args.only or [name for name, (group, _) in CONFIGS.items() if args.group in (None, group)]
    work = args.work / f"{args.minutes:g}min"
    out = args.out or Path(f"bench/results/quality_{args.minutes:g}min.md")
    if args.report_only:
        report(args.minutes, work, out, args.curves, args.note)
        return
    for name in names:
        run_config(name, args.minutes, work, args.overrides)
        # After every row, so a long matrix that is interrupted keeps what it measured.
        rows = report(args.minutes, work, out, args.curves, args.note)
        accuracy = next(row["best_val_accuracy"] for row in rows if row["name"] == name)
        logger.info("%s: best val accuracy %.4f; wrote %s", name, accuracy, out)


if __name__ == "__main__":
    main()
