"""The data flow: scrape -> clean -> split."""

from __future__ import annotations

from prefect import flow

from flows.compose import Outcomes, run_steps
from tasks import reports, steps

#: The flow's steps, in the order it runs them.
DATA_STEPS = (steps.scrape, steps.clean, steps.split)


@flow(name="data-pipeline")
def data_pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> Outcomes:
    """Scrape web images (when ``scrape.enabled``), clean all sources into faces, split them.

    Args:
        params_file: The params file (relative paths inside resolve against its folder).
        overrides: ``section.key=value`` overrides, as ``emonext --set`` takes them.

    Returns:
        Per step, its final state's name and its summary.
    """
    outcomes = run_steps(DATA_STEPS, params_file, overrides)
    reports.publish_data_report(outcomes)
    return outcomes


if __name__ == "__main__":
    data_pipeline()
