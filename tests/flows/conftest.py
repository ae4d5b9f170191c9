"""Fixtures for the Prefect flows: tiny params files in a temporary folder, a test Prefect API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "fer2013"


def write_tiny_params(folder: Path, **sections: dict[str, Any]) -> Path:
    """Write ``folder/params.yaml``: the repository's params with a tiny model and data cap, every
    output inside ``folder`` and the bundled FER2013 sample as the first cleaning source.

    Args:
        folder: Where the params file and every output go.
        sections: Further changes per section, e.g. ``orchestration={"deployment": "x"}``.
    """
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    data, runs = folder / "data", folder / "runs"
    raw["scrape"]["output_dir"] = str(data / "scraped")
    raw["clean"]["sources"] = [
        {"name": "fer2013", "path": str(SAMPLE), "pre_cropped": True},
        {"name": "scraped", "path": str(data / "scraped"), "pre_cropped": False},
    ]
    raw["clean"]["output_dir"] = str(data / "clean")
    raw["split"]["output_dir"] = str(data / "split")
    raw["data"].update(root=str(data / "split"), max_per_class=6)
    raw["model"]["input_size"] = 32
    raw["train"].update(
        epochs=2, batch_size=16, warmup_epochs=0.5, precision="fp32", output_dir=str(runs / "train")
    )
    raw["evaluate"]["output_dir"] = str(runs / "evaluate")
    raw["register"].update(
        tracking_uri=None, store_dir=str(runs / "mlflow"), output_dir=str(runs / "register")
    )
    for name, changes in sections.items():
        raw[name].update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary Prefect API (``prefect_test_harness``, about 15 s to start) for the session,
    with cached results stored in a temporary folder instead of ``~/.prefect/storage``."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    settings = {PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_SERVER_ANALYTICS_ENABLED: False}
    with temporary_settings(updates=settings), prefect_test_harness():
        yield


@pytest.fixture(autouse=True)
def _local_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register into each test's own SQLite store, never a server named in the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
