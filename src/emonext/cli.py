"""``emonext`` command line: one command per pipeline step.

Results (metrics JSON) go to stdout; logs and progress bars go to stderr, so
``emonext evaluate ... > metrics.json`` captures exactly the metrics.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from emonext.config import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params

app = typer.Typer(
    name="emonext",
    help="Facial emotion recognition with EmoNeXt: train, evaluate and compare models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
logger = logging.getLogger("emonext")

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="params file (the one source of configuration)")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a params key, e.g. --set train.lr=3e-4 (repeatable)"),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]
ProgressOption = Annotated[bool, typer.Option(help="show progress bars")]

#: Errors that are the user's input, reported as one clear message instead of a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, FileNotFoundError, ValueError, RuntimeError)

F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False, rich_tracebacks=False)],
        force=True,
    )


def _reports_errors(command: F) -> F:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            stderr.print(
                "[yellow]interrupted[/yellow]: finished work is kept; run the command again to resume "
                "(train: --set train.resume=true)"
            )
            raise typer.Exit(130) from None
        except USER_ERRORS as error:
            stderr.print(f"[bold red]error:[/bold red] {error}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _load(params_file: Path, overrides: list[str] | None) -> Params:
    return load_params(params_file, overrides or [])


def _start(params_file: Path, overrides: list[str] | None, verbose: bool) -> Params:
    """What every pipeline-step command does first: logging to stderr, then the validated params."""
    _setup_logging(verbose)
    return _load(params_file, overrides)


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
@_reports_errors
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

    params = _start(params_file, overrides, verbose)
    summary = run_scrape(params.scrape, params.scrape.classes or params.data.classes, progress=progress)
    _print_json(summary.to_dict())


@app.command()
@_reports_errors
def clean(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Drop corrupt, tiny, blurry, duplicate and faceless images; crop faces; write clean.output_dir."""
    from emonext.cleaning import clean as run_clean

    params = _start(params_file, overrides, verbose)
    report = run_clean(params.clean, params.data, progress=progress)
    _print_json(report.to_dict())


@app.command()
@_reports_errors
def split(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Split the cleaned faces into train/val/test (stratified, leakage-free, stable)."""
    from emonext.splitting import split as run_split

    params = _start(params_file, overrides, verbose)
    report = run_split(params.split, params.clean.output_dir, params.data)
    _print_json(report.to_dict())


@app.command()
@_reports_errors
def train(
    params_file: ParamsOption = DEFAULT_PARAMS_FILE,
    overrides: SetOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Train the configured model; writes checkpoints and per-epoch metrics to train.output_dir."""
    from emonext.training import train as run_training

    params = _start(params_file, overrides, verbose)
    result = run_training(params, progress=progress)
    _print_json(
        {**result.summary(), "output_dir": str(result.output_dir), "checkpoint": str(result.best_checkpoint)}
    )


@app.command()
@_reports_errors
def evaluate(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="models:/emonext@champion, models:/NAME/VERSION, runs:/ID/model, a checkpoint file or "
            "a training folder [default: train.output_dir]",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="folder of labelled, pre-cropped faces or fer2013.csv [default: data.root]"
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="split of a train/val/test layout [default: evaluate.split]")
    ] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="TenCrop test-time augmentation")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder [default: evaluate.output_dir]")
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
    _setup_logging(verbose)
    from emonext.evaluation.evaluate import evaluate_model

    params = _load(params_file, overrides) if params_file.is_file() or overrides else None
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
    _print_json(json.loads(result.report_file.read_text()))


@app.command()
@_reports_errors
def register(
    force: Annotated[
        bool | None,
        typer.Option(
            "--force/--no-force", help="make it champion even if it scores lower [default: register.force]"
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

    params = _start(params_file, overrides, verbose)
    _print_json(register_model(params, force=force).to_dict())


@app.command()
@_reports_errors
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
    _setup_logging(False)
    from emonext.evaluation.compare import comparison_markdown, write_comparison

    rows = write_comparison(reports, out, allow_mismatch=allow_mismatch)
    sys.stdout.write(comparison_markdown(rows))


@app.command("params")
@_reports_errors
def show_params(params_file: ParamsOption = DEFAULT_PARAMS_FILE, overrides: SetOption = None) -> None:
    """Validate the params file (with overrides) and print the resolved configuration as JSON."""
    _print_json(_load(params_file, overrides).model_dump(mode="json"))


def main() -> None:
    app(prog_name="emonext")
