"""Running a sequence of step tasks inside a flow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from prefect import Task
from prefect.states import State

from emonext.config import load_params
from tasks.steps import configured

#: Per step: its final state's name (``Completed``, or ``Cached`` when served from the cache) and
#: its result (the step's JSON-ready summary).
Outcomes = dict[str, dict[str, Any]]


def run_steps(
    steps: Sequence[Task[..., dict[str, Any]]], params_file: str, overrides: list[str] | None
) -> Outcomes:
    """Run ``steps`` one after the other, each on the same params file and overrides.

    The steps pass data through the folders ``params.yaml`` names, so each waits for the one
    before it and none takes another's result. The first failure stops the sequence and is
    raised with its own exception and message, which fails the flow run; outputs written by the
    steps before it stay as they are.

    Raises:
        ConfigError: The params are invalid (checked before any step runs).
        Exception: The first failing step's error.
    """
    overrides = list(overrides or [])
    params = load_params(params_file, overrides)
    outcomes: Outcomes = {}
    for step in steps:
        # With return_state the call returns the task run's final state instead of raising.
        state = cast(
            "State[dict[str, Any]]", configured(step, params)(params_file, overrides, return_state=True)
        )
        outcomes[step.name] = {"state": state.name, "result": state.result()}
    return outcomes
