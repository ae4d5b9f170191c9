"""``python -m flows.pipeline serve`` against a real ``prefect server start``: a scheduled run completes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import REPO, write_tiny_params

DEPLOYMENT = "emonext-pipeline-test"
SERVER_START_TIMEOUT = 60.0
RUN_TIMEOUT = 150.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _wait_healthy(api: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if _request(f"{api}/health") is True:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes], first: int, grace: float) -> None:
    """Signal the process group, then kill it if it has not exited within ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, first)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path, stop_signal: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group (so its own children are stopped with it), always stopped."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            _stop(process, stop_signal, grace=30)


def _flow_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    return list(
        _request(
            f"{api}/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )
    )


@pytest.mark.slow
def test_served_deployment_runs_the_pipeline_on_schedule(tmp_path: Path) -> None:
    params_file = write_tiny_params(tmp_path / "work", orchestration={"deployment": DEPLOYMENT})
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        # Schedule the interval's runs within seconds, not the scheduler's default minute.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PYTHONPATH=str(REPO),
    )
    server_command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    with _process(
        [*server_command, "--port", str(port)], env, tmp_path / "server.log", signal.SIGINT
    ) as server:
        _wait_healthy(api, server, tmp_path / "server.log")
        serve_env = {**env, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        serve_log = tmp_path / "serve.log"
        serve_command = [sys.executable, "-m", "flows.pipeline", "serve", "--interval", "5"]
        # serve is stopped (the with block) before the server: the other way round, it hangs.
        with _process([*serve_command, "--params", str(params_file)], serve_env, serve_log, signal.SIGINT):
            deadline = time.monotonic() + RUN_TIMEOUT
            deployment_id, runs = None, []
            while time.monotonic() < deadline:
                try:
                    if deployment_id is None:
                        deployment_id = _request(f"{api}/deployments/name/pipeline/{DEPLOYMENT}")["id"]
                    runs = _flow_runs(api, deployment_id)
                except urllib.error.HTTPError as error:
                    if error.code != 404:  # 404: serve has not created the deployment yet
                        raise
                states = [run["state_type"] for run in runs]
                if "COMPLETED" in states:
                    break
                if {"FAILED", "CRASHED"} & set(states):
                    pytest.fail(f"a scheduled run failed: {states}\n{serve_log.read_text()[-5000:]}")
                time.sleep(1)
            else:
                pytest.fail(
                    f"no completed run in {RUN_TIMEOUT:.0f} s: {runs}\n{serve_log.read_text()[-5000:]}"
                )

    completed = next(run for run in runs if run["state_type"] == "COMPLETED")
    assert completed["parameters"] == {"params_file": str(params_file), "overrides": []}
    registration = json.loads((tmp_path / "work" / "runs" / "register" / "registration.json").read_text())
    assert registration["version"] == "1"
    assert "champion" in registration["aliases"]
