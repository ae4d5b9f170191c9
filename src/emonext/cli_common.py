"""What every ``emonext`` command shares: options, logging to stderr, error reporting, JSON output.

A module of its own so that command groups living next to their code (``emonext predict`` in
:mod:`emonext.inference.cli`) and the main app (:mod:`emonext.cli`) import it without a cycle.
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

from emonext.config import ConfigError, Params, load_params

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
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    FileNotFoundError,
    ValueError,
    RuntimeError,
    ConnectionError,
)

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False, rich_tracebacks=False)],
        force=True,
    )


def reports_errors(command: F) -> F:
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


def load(params_file: Path, overrides: list[str] | None) -> Params:
    return load_params(params_file, overrides or [])


def start(params_file: Path, overrides: list[str] | None, verbose: bool) -> Params:
    """What every pipeline-step command does first: logging to stderr, then the validated params."""
    setup_logging(verbose)
    return load(params_file, overrides)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
