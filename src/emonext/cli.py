"""``emonext`` command line: one command per pipeline step.

Results (metrics JSON) go to stdout; logs and progress bars go to stderr, so
``emonext evaluate ... > metrics.json`` captures exactly the metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from emonext.cli_common import (
    ParamsOption,
    ProgressOption,
    SetOption,
    VerboseOption,
    load,
    print_json,
    reports_errors,
    setup_logging,
    start,
)
from emonext.config import DEFAULT_PARAMS_FILE, ConfigError
from emonext.inference.cli import predict_app
from emonext.train import train as train_command

app = typer.Typer(
    name="emonext",
    help="Facial emotion recognition with EmoNeXt: train, evaluate and compare models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@reports_errors
def scrape(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Search the web for each emotion keyword and download validated images into scrape.output_dir.

    Every URL gets a row in manifest.csv (kept, duplicate, or why it failed); re-runs resume.
    """
    from emonext.scraping import scrape as run_scrape

    params = start(params_file, overrides, verbose)
    summary = run_scrape(params.scrape, params.scrape.classes or params.data.classes, progress=progress)
    print_json(summary.to_dict())


@app.command()
@reports_errors
def clean(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Drop corrupt, tiny, blurry, duplicate and faceless images; crop faces; write clean.output_dir."""
    from emonext.cleaning import clean as run_clean

    params = start(params_file, overrides, verbose)
    report = run_clean(params.clean, params.data, progress=progress)
    print_json(report.to_dict())


@app.command()
@reports_errors
def split(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Split the cleaned faces into train/val/test (stratified, leakage-free, stable)."""
    from emonext.splitting import split as run_split

    params = start(params_file, overrides, verbose)
    report = run_split(params.split, params.clean.output_dir, params.data)
    print_json(report.to_dict())


# One training command for `emonext train` and `python -m emonext.train` (what torchrun launches).
app.command()(train_command)


@app.command()
@reports_errors
def tune(
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="join this Ray cluster (auto, ray://head:10001) instead of ray.address; "
            "default: ray.address (null = a local Ray on ray.num_cpus CPUs)",
        ),
    ] = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Search tune.search_space with Ray Tune (random search, ASHA early stopping), logging to MLflow.

    Writes best_params.yaml (train with `emonext train --params`), best.json (with the matching
    --set and `dvc exp run -S` options) and trials.csv to tune.output_dir; prints the result.
    """
    from emonext.tuning import run_tune

    # JSON-quoted: an address such as 10.0.0.1:6379 must stay a string when read as YAML.
    extra = [f"ray.address={json.dumps(address)}"] if address else []
    params = start(params_file, [*(overrides or []), *extra], verbose)
    outcome = run_tune(params, progress=progress)
    print_json(outcome.to_dict())


@app.command()
@reports_errors
def evaluate(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="models:/emonext@champion, models:/NAME/VERSION, runs:/ID/model, a checkpoint file or "
            "a training folder (default: train.output_dir)",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="folder of labelled, pre-cropped faces or fer2013.csv (default: data.root)"
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="split of a train/val/test layout (default: evaluate.split)")
    ] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="TenCrop test-time augmentation")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder (default: evaluate.output_dir)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score a model on labelled faces and print the metrics JSON (accuracy, macro-F1, per class).

    With --model and --data given, no params file is needed: the model's stored configuration
    decides image size and classes.
    """
    setup_logging(verbose)
    from emonext.evaluation.evaluate import evaluate_model

    params = load(params_file, overrides) if params_file.is_file() or overrides else None
    if params is None and (model is None or data is None):
        raise ConfigError(f"{params_file}: params file not found; pass both --model and --data")
    settings = params.evaluate if params else None
    result = evaluate_model(
        model_reference=model or str(params.train.output_dir),  # type: ignore[union-attr]
        data=data or params.data.root,  # type: ignore[union-attr]
        output_dir=out or (settings.output_dir if settings else Path("runs/evaluate")),
        split=split or (settings.split if settings else None),
        batch_size=settings.batch_size if settings else 256,
        tta=tta if tta is not None else bool(settings and settings.tta),
        device=device,
    )
    print_json(json.loads(result.report_file.read_text()))


@app.command()
@reports_errors
def register(
    force: Annotated[
        bool | None,
        typer.Option(
            "--force/--no-force", help="make it champion even if it scores lower (default: register.force)"
        ),
    ] = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Log the trained, evaluated model to MLflow and register it as a new version.

    The version becomes `challenger`; it becomes `champion` only if it beats the champion's test
    score on the same faces. Prints registration.json.
    """
    from emonext.registry import register_model

    params = start(params_file, overrides, verbose)
    print_json(register_model(params, force=force).to_dict())


@app.command()
@reports_errors
def compare(
    reports: Annotated[list[Path], typer.Argument(help="report.json files written by `emonext evaluate`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for comparison.md/.json/.png")] = Path(
        "runs/compare"
    ),
    allow_mismatch: Annotated[
        bool, typer.Option(help="compare reports scored on different images (not a fair comparison)")
    ] = False,
) -> None:
    """Compare several evaluated models in one table and bar chart."""
    setup_logging(False)
    from emonext.evaluation.compare import comparison_markdown, write_comparison

    rows = write_comparison(reports, out, allow_mismatch=allow_mismatch)
    sys.stdout.write(comparison_markdown(rows))


@app.command()
@reports_errors
def ui(
    host: Annotated[
        str | None, typer.Option(help="bind address (default: infer.host; 127.0.0.1 = this computer only)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default: infer.port; 0 = any free port)")] = None,
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Open the web GUI: photos, videos and the webcam in your browser (http://127.0.0.1:7860).

    Loads infer.model (the registry champion, else the built-in model) and serves until Ctrl+C.
    """
    from emonext.ui import serve_ui

    serve_ui(start(params_file, overrides, verbose), host=host, port=port)


@app.command("params")
@reports_errors
def show_params(params_file: ParamsOption = DEFAULT_PARAMS_FILE, overrides: SetOption = None) -> None:
    """Validate the params file (with overrides) and print the resolved configuration as JSON."""
    print_json(load(params_file, overrides).model_dump(mode="json"))


app.add_typer(predict_app, name="predict")


def main() -> None:
    app(prog_name="emonext")
