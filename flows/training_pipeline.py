"""The training flow: train -> evaluate -> register."""

from __future__ import annotations

from prefect import flow

from flows.compose import Outcomes, run_steps
from tasks import reports, steps

#: The flow's steps, in the order it runs them.
TRAINING_STEPS = (steps.train, steps.evaluate, steps.register)


@flow(name="training-pipeline")
def training_pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> Outcomes:
    """Train on ``data.root``, score the checkpoint on ``evaluate.split``, register it in MLflow.

    Args:
        params_file: The params file (relative paths inside resolve against its folder).
        overrides: ``section.key=value`` overrides, as ``emonext --set`` takes them.

    Returns:
        Per step, its final state's name and its summary.
    """
    outcomes = run_steps(TRAINING_STEPS, params_file, overrides)
    reports.publish_training_report(outcomes)
    return outcomes


if __name__ == "__main__":
    training_pipeline()
