"""The DVC pipeline (dvc.yaml) and the DVC setup (.dvc/config, scripts/import_fer2013.sh).

The slow tests run the real pipeline, with the real `emonext` commands, in a throw-away git + DVC
repository holding copies of dvc.yaml, the DVC config, the code the stages depend on, the bundled
FER2013 sample and the repository's params.yaml shrunk (tiny model, a few faces per class) so a
full `dvc repro` takes seconds. They share that repository (module-scoped fixtures), each leaving it
up to date, so the whole module costs one full run plus one re-training (a `dvc exp run`).

The fast tests keep dvc.yaml consistent with what it describes: the Prefect flow's steps, the
params.yaml sections and the files the stages depend on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from emonext.fileio import content_hash

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = REPO / "dvc.yaml"
PARAMS_YAML = REPO / "params.yaml"
#: The venv's console scripts (`emonext`, `dvc`) sit next to its interpreter; not resolved, so a
#: symlinked venv interpreter still points at the venv's bin folder.
VENV_BIN = Path(sys.executable).parent
STAGES = ("scrape", "clean", "split", "train", "evaluate", "register")
#: What every stage writes, relative to the repository root (params.yaml's default output_dirs).
OUTPUTS = (
    "data/scraped/manifest.csv",
    "data/clean/manifest.csv",
    "data/split/counts.json",
    "runs/train/best.safetensors",
    "runs/train/last.pt",
    "runs/train/metrics.json",
    "runs/train/summary.json",
    "runs/evaluate/report.json",
    "runs/evaluate/confusion.json",
    "runs/evaluate/confusion.png",
    "runs/register/registration.json",
)
#: The tiny configuration of tests/conftest.py (TINY), evaluated on the split step's test faces.
TINY_PARAMS: dict[str, Any] = {
    "model.arch": "emonext",
    "model.backbone": "convnext_atto",
    "model.input_size": 32,
    "model.output_stride": 32,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.warmup_epochs": 0.5,
    "train.precision": "fp32",
    "data.max_per_class": 6,
    "evaluate.split": "test",
    "register.tracking_uri": None,
    "register.store_dir": "runs/mlflow",  # relative to the temporary repository's params.yaml
}
# Twice the default, so the experiment always changes train.lr whatever params.yaml picks.
EXPERIMENT_LR = 2 * yaml.safe_load(PARAMS_YAML.read_text())["train"]["lr"]
EXPERIMENT = "lr-x2"
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")


@dataclass
class Result:
    """A finished command: its exit status and stdout + stderr interleaved."""

    returncode: int
    output: str

    def stages_run(self) -> list[str]:
        """The stages DVC ran, in order (from its "Running stage 'NAME':" lines)."""
        return RUNNING_STAGE.findall(self.output)


def environment(home: Path) -> dict[str, str]:
    """Offline, telemetry-free and isolated from the user's DVC and MLflow settings.

    A global DVC config (another default remote, another cache) or ``MLFLOW_TRACKING_URI`` (which
    wins over ``register.tracking_uri``) would make the test touch the user's storage.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    for name in ("global", "system", "site"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(home / "global"),
        DVC_SYSTEM_CONFIG_DIR=str(home / "system"),
        DVC_SITE_CACHE_DIR=str(home / "site"),
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GIT_AUTHOR_NAME="emonext tests",
        GIT_AUTHOR_EMAIL="tests@emonext.invalid",
        GIT_COMMITTER_NAME="emonext tests",
        GIT_COMMITTER_EMAIL="tests@emonext.invalid",
    )
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> Result:
    """Run ``command`` in ``cwd``; with ``check``, a failure shows its whole output."""
    completed = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    result = Result(completed.returncode, completed.stdout)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.output}"
    return result


def tiny_params(source: Path) -> dict[str, Any]:
    """The repository's params with TINY_PARAMS set: edited key by key, so every other key
    (and any key added later) stays as the repository has it."""
    params = yaml.safe_load(source.read_text())
    for dotted, value in TINY_PARAMS.items():
        section, key = dotted.split(".")
        assert key in params[section], f"params.yaml has no {dotted}"
        params[section][key] = value
    return params


def dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load(DVC_YAML.read_text())


@dataclass
class Pipeline:
    """The temporary repository, what its first `dvc repro` printed and what git saw after it."""

    root: Path
    env: dict[str, str]
    first_repro: Result = field(default_factory=lambda: Result(0, ""))
    git_status_after_repro: str = ""

    def dvc(self, *args: str, check: bool = True) -> Result:
        return run([str(VENV_BIN / "dvc"), *args], self.root, self.env, check)

    def git(self, *args: str) -> Result:
        return run(["git", *args], self.root, self.env)

    def set_param(self, dotted: str, value: Any) -> None:
        params_file = self.root / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        section, key = dotted.split(".")
        params[section][key] = value
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    def lock(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "dvc.lock").read_text())


def make_repository(root: Path, env: dict[str, str]) -> None:
    """A git + DVC repository with what the pipeline needs, and nothing it writes."""
    root.mkdir(parents=True)
    run(["git", "init", "--quiet"], root, env)
    shutil.copytree(
        REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    shutil.copytree(REPO / "data" / "sample" / "fer2013", root / "data" / "sample" / "fer2013")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(PARAMS_YAML), sort_keys=False))
    run([str(VENV_BIN / "dvc"), "init", "--quiet"], root, env)
    # The repository's DVC settings (default remote `local` at <repo>/.dvc-storage, no analytics).
    for name in (".dvc/config", ".dvcignore"):
        shutil.copy2(REPO / name, root / name)
    run(["git", "add", "--all"], root, env)
    run(["git", "commit", "--quiet", "--message", "pipeline"], root, env)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The temporary repository after one full `dvc repro`, its dvc.lock committed."""
    base = tmp_path_factory.mktemp("dvc")
    env = environment(base / "config")
    root = base / "repo"
    make_repository(root, env)
    state = Pipeline(root, env)
    state.first_repro = state.dvc("repro")
    state.git_status_after_repro = state.git("status", "--porcelain", "--untracked-files=all").output
    state.git("add", "dvc.lock")
    state.git("commit", "--quiet", "--message", "dvc.lock")
    yield state


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_outputs(pipeline: Pipeline) -> None:
    assert pipeline.first_repro.stages_run() == list(STAGES)
    missing = [name for name in OUTPUTS if not (pipeline.root / name).is_file()]
    assert not missing, f"stages ran but did not write {missing}"
    assert list(pipeline.lock()["stages"]) == list(STAGES)
    registration = json.loads((pipeline.root / "runs/register/registration.json").read_text())
    assert registration["version"] == "1"
    # Outputs are git-ignored (data/ and runs/ by the root .gitignore): git sees only dvc.lock.
    assert pipeline.git_status_after_repro.splitlines() == ["?? dvc.lock"]


@pytest.mark.slow
def test_second_repro_runs_nothing(pipeline: Pipeline) -> None:
    result = pipeline.dvc("repro")
    assert result.stages_run() == []
    assert "Data and pipelines are up to date" in result.output


@pytest.fixture(scope="module")
def experiment(pipeline: Pipeline) -> Result:
    """`dvc exp run` with another train.lr: the one re-training the module pays for (it checks both
    what a train.* change reruns and that experiments work)."""
    return pipeline.dvc("exp", "run", "--name", EXPERIMENT, "--set-param", f"train.lr={EXPERIMENT_LR}")


@pytest.mark.slow
def test_train_param_change_reruns_only_train_and_downstream(pipeline: Pipeline, experiment: Result) -> None:
    assert experiment.stages_run() == ["train", "evaluate", "register"]
    for stage in ("scrape", "clean", "split"):
        assert f"Stage '{stage}' didn't change, skipping" in experiment.output
    lock = pipeline.lock()["stages"]
    committed = yaml.safe_load(pipeline.git("show", "HEAD:dvc.lock").output)["stages"]
    assert lock["train"]["params"]["params.yaml"]["train"]["lr"] == EXPERIMENT_LR
    assert lock["split"] == committed["split"]
    assert lock["train"]["outs"] != committed["train"]["outs"]


@pytest.mark.slow
def test_experiment_metrics_are_reported(pipeline: Pipeline, experiment: Result) -> None:
    # The metrics are DVC-cached (runs/ is git-ignored), so the experiment's own row has them too.
    table = json.loads(pipeline.dvc("exp", "show", "--json").output)
    rows = {
        rev["name"]: rev
        for baseline in table
        for group in baseline.get("experiments") or []
        for rev in group["revs"]
    }
    assert EXPERIMENT in rows, f"experiment missing from `dvc exp show`: {list(rows)}"
    data = rows[EXPERIMENT]["data"]
    assert 0.0 <= data["metrics"]["runs/evaluate/report.json"]["data"]["accuracy"] <= 1.0
    assert data["metrics"]["runs/train/summary.json"]["data"]["epochs_run"] == 2
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == EXPERIMENT_LR

    shown = json.loads(pipeline.dvc("metrics", "show", "--json").output)
    workspace = next(iter(shown.values()))["data"]  # only the workspace is shown without revisions
    assert {"runs/train/summary.json", "runs/evaluate/report.json"} <= set(workspace)
    assert 0.0 <= workspace["runs/evaluate/report.json"]["data"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_plots_render(pipeline: Pipeline) -> None:
    plots = json.loads(pipeline.dvc("plots", "show", "--json").output)
    assert not plots.get("errors"), plots["errors"]
    assert set(plots["data"]) == {
        "accuracy",
        "loss",
        "accuracy_vs_time",
        "learning_rate",
        "confusion",
        "runs/evaluate/confusion.png",
    }


@pytest.mark.slow
def test_push_then_pull_restores_data_and_models(pipeline: Pipeline) -> None:
    root = pipeline.root
    split_hash = content_hash(root / "data/split")
    model_hash = content_hash(root / "runs/train/best.safetensors")
    pipeline.dvc("push")
    assert any((root / ".dvc-storage").rglob("*.dir")), "the default remote is <repo>/.dvc-storage"

    shutil.rmtree(root / ".dvc" / "cache")
    outputs = ("data/scraped", "data/clean", "data/split", "runs/train", "runs/evaluate", "runs/register")
    for output in outputs:
        shutil.rmtree(root / output)
    pipeline.dvc("pull")

    assert content_hash(root / "data/split") == split_hash
    split_out = pipeline.lock()["stages"]["split"]["outs"][0]
    assert split_out["path"] == "data/split" and split_out["md5"] == split_hash
    assert content_hash(root / "runs/train/best.safetensors") == model_hash
    assert pipeline.dvc("repro").stages_run() == []


def test_import_script_tracks_fer2013_with_dvc(tmp_path: Path) -> None:
    """scripts/import_fer2013.sh on a tarball with a wrapping folder, as FER2013's is."""
    env = environment(tmp_path / "config")
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "--quiet"], root, env)
    run([str(VENV_BIN / "dvc"), "init", "--quiet"], root, env)
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    (root / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "import_fer2013.sh", root / "scripts" / "import_fer2013.sh")
    sample = REPO / "data" / "sample" / "fer2013"
    tarball = tmp_path / "fer2013.tar.gz"
    run(["tar", "-czf", str(tarball), "-C", str(sample.parent), sample.name], tmp_path, env)

    run(["bash", "scripts/import_fer2013.sh", str(tarball)], root, env)

    assert sorted(path.name for path in (root / "data" / "fer2013").iterdir()) == ["train", "val"]
    tracked = yaml.safe_load((root / "data" / "fer2013.dvc").read_text())["outs"][0]
    assert tracked["md5"] == content_hash(sample)
    assert (root / ".dvc-storage" / "files" / "md5" / tracked["md5"][:2] / tracked["md5"][2:]).is_file()
    missing = str(tmp_path / "missing.csv")
    refused = run(["bash", "scripts/import_fer2013.sh", missing], root, env, check=False)
    assert refused.returncode == 2 and "not found" in refused.output


def test_dvc_stages_are_the_prefect_flow_steps() -> None:
    """dvc.yaml and the Prefect flow are two runners of one pipeline: same steps, same order."""
    from flows.pipeline import PIPELINE_STEPS

    assert list(dvc_yaml()["stages"]) == list(PIPELINE_STEPS) == list(STAGES)


def test_every_stage_tracks_its_own_params_section() -> None:
    params = yaml.safe_load(PARAMS_YAML.read_text())
    for name, stage in dvc_yaml()["stages"].items():
        assert name in params, f"params.yaml has no {name} section for stage {name}"
        assert name in stage.get("params", []), f"stage {name} does not track params section {name}"
        for tracked in stage["params"]:
            section, _, key = tracked.partition(".")
            assert section in params and (not key or key in params[section]), f"{name}: no param {tracked}"


def test_stage_dependencies_exist_or_are_pipeline_outputs() -> None:
    """A renamed module or folder must not silently break `dvc repro` (a missing dep is an error)."""
    stages = dvc_yaml()["stages"]
    params = yaml.safe_load(PARAMS_YAML.read_text())
    outputs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in stages.values()
        for kind in ("outs", "metrics", "plots")
        for out in stage.get(kind, [])
    }
    for name, stage in stages.items():
        for dep in stage["deps"]:
            path = dep.replace("${clean.sources[0].path}", params["clean"]["sources"][0]["path"])
            assert path in outputs or (REPO / path).exists(), f"stage {name}: dependency {dep} is missing"


def test_default_remote_is_local_storage_inside_the_repository() -> None:
    """`dvc push`/`dvc pull` work out of the box on any clone: the committed config (not the user's
    config.local or global config) names a remote in the clone itself, kept out of git."""
    from dvc.config import Config

    committed = Config(dvc_dir=str(REPO / ".dvc"), validate=False).load_one("repo")
    assert committed["core"]["remote"] == "local"
    assert str(committed["core"]["analytics"]).lower() == "false"
    # Stored relative to .dvc/ (so it is <clone>/.dvc-storage wherever the clone is); DVC resolves it.
    assert re.search(r"^\s*url = \.\./\.dvc-storage\s*$", (REPO / ".dvc/config").read_text(), re.MULTILINE)
    assert Path(committed["remote"]["local"]["url"]) == REPO / ".dvc-storage"
    assert "/.dvc-storage/" in (REPO / ".gitignore").read_text().splitlines()
