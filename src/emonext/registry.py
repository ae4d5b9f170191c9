"""MLflow tracking, the model registry with champion/challenger promotion, and the model loader.

* :func:`register_model` is the pipeline's register step: it logs a training run (flattened
  params, per-epoch metrics, test metrics, the confusion matrix, the cleaning and evaluation
  reports, the git commit and the DVC hash of the training data), logs the model as an MLflow
  pyfunc (:mod:`emonext.mlflow_pyfunc`), registers it as a new version, gives it the
  ``challenger`` alias and moves ``champion`` to it only if it beats the current champion on the
  same test faces. Versions are never deleted or overwritten.
* :func:`load_model` resolves ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/model``
  or a local checkpoint to a checkpoint file, downloading registry versions once into a local
  cache (a version's files never change, so the cache needs no invalidation).

The local default is a SQLite store (runs and registry) plus an artifact folder; the
``MLFLOW_TRACKING_URI`` environment variable switches to a tracking server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emonext.checkpoint import (
    BEST_CHECKPOINT,
    Checkpoint,
    CheckpointError,
    read_checkpoint,
    resolve_checkpoint_path,
)
from emonext.config import DEFAULT_PARAMS_FILE, ConfigError, Params, RegisterConfig, flatten, load_params
from emonext.fileio import content_hash, write_json

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: The model's name inside its MLflow run.
MODEL_ARTIFACT = "model"
REGISTRATION_FILE = "registration.json"
CACHE_ENV = "EMONEXT_MODEL_CACHE"
#: The model shipped inside the package (see its MODEL_CARD.md): inference works offline.
BUILTIN_URI = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent / "assets" / "builtin"
BUILTIN_WEIGHTS = "model.safetensors"
DEFAULT_CACHE = Path("~/.cache/emonext/models")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)/(?P<path>.+)$")


class RegistryError(RuntimeError):
    """The registry is unreachable, or has no such model, version or alias."""


# --------------------------------------------------------------------------------------------
# Tracking store


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _prepare_environment(uri: str) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri.startswith(("http://", "https://")):
        # Fail in seconds, not minutes, when a server is down: MLflow retries 7 times by default.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@contextmanager
def registry_errors(uri: str, what: str) -> Iterator[None]:
    """Turn MLflow's errors into :class:`RegistryError` messages naming the store and the object."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        code = getattr(error, "error_code", "")
        if any(sign in str(error) for sign in ("Max retries exceeded", "Connection refused", "timed out")):
            raise RegistryError(f"{what}: registry at {uri} is unreachable ({error.message})") from None
        if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            raise RegistryError(f"{what}: not found in the registry at {uri} ({error.message})") from None
        raise RegistryError(f"{what}: registry at {uri} failed: {error.message}") from None
    except (ConnectionError, OSError) as error:
        raise RegistryError(f"{what}: registry at {uri} is unreachable ({error})") from None


def tracking_client(uri: str, create: bool) -> Any:
    """An ``MlflowClient`` for ``uri``; a missing SQLite store is an error unless ``create``."""
    _prepare_environment(uri)
    from mlflow import MlflowClient

    database = _sqlite_file(uri)
    if database is not None and not database.is_file():
        if not create:
            raise RegistryError(
                f"no model registry at {uri}: {database} does not exist "
                "(register a model first, or set MLFLOW_TRACKING_URI to your server)"
            )
        database.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: Any, config: RegisterConfig, uri: str) -> str:
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = (Path(config.store_dir).resolve() / "artifacts").as_uri() if _sqlite_file(uri) else None
    return str(client.create_experiment(config.experiment, artifact_location=location))


# --------------------------------------------------------------------------------------------
# Register step


@dataclass
class Registration:
    """What the register step did (also written to ``registration.json``)."""

    model_name: str
    version: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    metric: str
    challenger_score: float
    champion_version: str
    champion_score: float | None
    promoted: bool
    reason: str
    aliases: list[str] = field(default_factory=list)
    run_url: str | None = None
    model_uri: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def register_model(params: Params, force: bool | None = None) -> Registration:
    """Log the trained and evaluated model to MLflow, register it and decide its aliases.

    Reads ``train.output_dir`` (checkpoint, per-epoch metrics), ``evaluate.output_dir`` (test
    report and confusion matrix, which must score this very checkpoint) and, when present,
    ``clean.output_dir``'s report.

    Args:
        params: The full configuration; ``register`` says where and how.
        force: Make the new version champion whatever its score; None reads ``register.force``.

    Returns:
        The run, the new version, its aliases and the promotion decision with its reason.

    Raises:
        CheckpointError: There is no trained checkpoint.
        FileNotFoundError: The evaluation report is missing.
        ValueError: The evaluation report scores another checkpoint (run evaluate again).
        RegistryError: The tracking server or registry failed.
    """
    import mlflow
    from mlflow.entities import Param, RunTag

    config = params.register
    force = config.force if force is None else force
    checkpoint_file = resolve_checkpoint_path(params.train.output_dir / BEST_CHECKPOINT)
    checkpoint = read_checkpoint(checkpoint_file)
    report_file = params.evaluate.output_dir / "report.json"
    if not report_file.is_file():
        raise FileNotFoundError(f"{report_file}: no evaluation report; run `emonext evaluate` first")
    report = json.loads(report_file.read_text())
    model_md5 = content_hash(checkpoint_file)
    if report.get("model_md5") != model_md5:
        raise ValueError(
            f"{report_file} scores {report.get('model')} (md5 {report.get('model_md5')}), not the current "
            f"{checkpoint_file} (md5 {model_md5}); run `emonext evaluate` again before registering"
        )
    score = float(report[config.metric])

    uri = config.effective_tracking_uri()
    client = tracking_client(uri, create=True)
    with registry_errors(uri, f"experiment {config.experiment!r}"):
        experiment_id = ensure_experiment(client, config, uri)
        run = client.create_run(experiment_id, tags=_provenance_tags(params, checkpoint, report, model_md5))
    run_id = run.info.run_id
    logger.info("MLflow run %s in experiment %r (%s)", run_id, config.experiment, uri)
    try:
        with registry_errors(uri, f"run {run_id}"):
            flat = flatten(params)
            client.log_batch(
                run_id,
                params=[Param(key, value[:6000]) for key, value in flat.items()],
                metrics=_metrics(params, report),
                tags=[RunTag("mlflow.runName", f"{checkpoint.model_config.arch}-{model_md5[:8]}")],
            )
            _log_reports(client, run_id, params)
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            with mlflow.start_run(run_id=run_id):
                info = _log_pyfunc(checkpoint, params)
            version = mlflow.register_model(
                info.model_uri, config.model_name, tags=_version_tags(report, run_id)
            )
        version_number = str(version.version)
        with registry_errors(uri, f"model {config.model_name!r}"):
            client.set_registered_model_alias(config.model_name, CHALLENGER, version_number)
            champion_version, champion_score, promoted, reason = _decide_champion(
                client, params, version_number, score, report, force
            )
            if promoted:
                client.set_registered_model_alias(config.model_name, CHAMPION, version_number)
                champion_version = version_number
            aliases = sorted(client.get_model_version(config.model_name, version_number).aliases)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise

    registration = Registration(
        model_name=config.model_name,
        version=version_number,
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        metric=config.metric,
        challenger_score=score,
        champion_version=champion_version,
        champion_score=champion_score,
        promoted=promoted,
        reason=reason,
        aliases=aliases,
        run_url=_run_url(uri, experiment_id, run_id),
        model_uri=f"models:/{config.model_name}/{version_number}",
    )
    write_json(config.output_dir / REGISTRATION_FILE, registration.to_dict())
    logger.info(
        "registered %s version %s (%s %.4f): %s",
        config.model_name,
        version_number,
        config.metric,
        score,
        reason,
    )
    return registration


def _metrics(params: Params, report: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Metric

    timestamp = int(os.path.getmtime(params.evaluate.output_dir / "report.json") * 1000)
    metrics: list[Metric] = []
    metrics_file = params.train.output_dir / "metrics.json"
    if metrics_file.is_file():
        for epoch in json.loads(metrics_file.read_text()):
            step = int(epoch["epoch"])
            for key, value in epoch.items():
                if key != "epoch" and isinstance(value, int | float) and value == value:  # NaN-free
                    metrics.append(Metric(key, float(value), timestamp, step))
    # "eval_", not the split's name: with evaluate.split=val the per-epoch val_* curves would clash.
    test = "eval_"
    metrics += [
        Metric(test + "accuracy", float(report["accuracy"]), timestamp, 0),
        Metric(test + "macro_f1", float(report["macro_f1"]), timestamp, 0),
    ]
    for name, values in (report.get("per_class") or {}).items():
        for key in ("precision", "recall", "f1"):
            if key in values:
                metrics.append(Metric(f"{test}{key}_{name}", float(values[key]), timestamp, 0))
    return metrics


def _log_reports(client: Any, run_id: str, params: Params) -> None:
    """Attach the evidence: confusion matrix, evaluation, training and cleaning reports."""
    groups = {
        "evaluation": [params.evaluate.output_dir / name for name in ("report.json", "confusion.png")],
        "training": [params.train.output_dir / name for name in ("metrics.json", "summary.json")],
        "cleaning": [params.clean.output_dir / name for name in ("report.json", "report.md")],
        "split": [params.data.root / name for name in ("counts.json",)],
    }
    for folder, files in groups.items():
        for file in files:
            if file.is_file():
                client.log_artifact(run_id, str(file), artifact_path=folder)


def _provenance_tags(
    params: Params, checkpoint: Checkpoint, report: dict[str, Any], model_md5: str
) -> dict[str, str]:
    tags = {
        "emonext.model_md5": model_md5,
        "emonext.arch": checkpoint.model_config.architecture,
        "emonext.data_root": str(params.data.root),
        "emonext.test_faces_sha256": str(report.get("faces_sha256", "")),
        **git_tags(params.data.root),
    }
    try:
        tags["emonext.data_dvc_md5"] = content_hash(params.data.root)
    except FileNotFoundError:
        tags["emonext.data_dvc_md5"] = "missing"
    return tags


def git_tags(path: Path) -> dict[str, str]:
    """The commit (and whether the tree had uncommitted changes) of the repository holding ``path``."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists():
        folder = folder.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"mlflow.source.git.commit": "unknown"}
    return {"mlflow.source.git.commit": commit, "emonext.git_dirty": str(bool(dirty)).lower()}


def _version_tags(report: dict[str, Any], run_id: str) -> dict[str, str]:
    return {
        "test_accuracy": str(report["accuracy"]),
        "test_macro_f1": str(report["macro_f1"]),
        "test_faces_sha256": str(report.get("faces_sha256", "")),
        "run_id": run_id,
    }


def _log_pyfunc(checkpoint: Checkpoint, params: Params) -> Any:
    import mlflow
    import pandas as pd
    from PIL import Image

    from emonext import __version__
    from emonext import mlflow_pyfunc as flavour

    png = io.BytesIO()
    Image.fromarray(_input_example(params, checkpoint)).save(png, format="PNG")
    example = pd.DataFrame({flavour.IMAGE_COLUMN: [base64.b64encode(png.getvalue()).decode()]})
    with warnings.catch_warnings():
        # The flavour's predict has no type hints on purpose (see mlflow_pyfunc); the signature
        # is explicit, so MLflow's suggestion to add hints is noise.
        warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(Path(flavour.__file__).with_name("mlflow_pyfunc_entry.py")),
            artifacts={flavour.CHECKPOINT_ARTIFACT: str(checkpoint.path)},
            signature=flavour.signature(checkpoint.classes),
            input_example=(example, {"detect_faces": False}),
            pip_requirements=[f"emonext=={__version__}", f"mlflow=={mlflow.__version__}"],
        )


def _input_example(params: Params, checkpoint: Checkpoint) -> Any:
    """A real face of the evaluated split (uint8 array), so the example is what users send."""
    import numpy as np

    from emonext.data.dataset import load_folder

    try:
        dataset, _ = load_folder(
            params.data.root,
            checkpoint.data_config.model_copy(update={"max_per_class": 1}),
            params.evaluate.split,
        )
        return dataset.images[0, 0].numpy()
    except (ValueError, FileNotFoundError, IndexError):
        side = checkpoint.data_config.image_size
        return np.full((side, side), 128, dtype=np.uint8)


def _decide_champion(
    client: Any, params: Params, version: str, score: float, report: dict[str, Any], force: bool
) -> tuple[str, float | None, bool, str]:
    """Return (champion version, champion score on these test faces, promote?, why)."""
    from mlflow.exceptions import MlflowException

    config = params.register
    metric = config.metric
    try:
        champion = client.get_model_version_by_alias(config.model_name, CHAMPION)
    except MlflowException:
        return version, None, True, "first champion: no version had the champion alias"
    champion_version = str(champion.version)
    champion_score = _champion_score(champion, params, report)
    if force:
        return (
            champion_version,
            champion_score,
            True,
            f"forced (register.force); champion was v{champion_version}",
        )
    if champion_score is None:
        return (
            champion_version,
            None,
            False,
            f"champion v{champion_version} cannot be scored on these test faces (different classes); "
            "kept it (use force to replace it)",
        )
    if score > champion_score:
        return (
            champion_version,
            champion_score,
            True,
            f"test {metric} {score:.4f} beats champion v{champion_version}'s {champion_score:.4f}",
        )
    return (
        champion_version,
        champion_score,
        False,
        f"test {metric} {score:.4f} does not beat champion v{champion_version}'s {champion_score:.4f}",
    )


def _champion_score(champion: Any, params: Params, report: dict[str, Any]) -> float | None:
    """The champion's metric on exactly the faces the challenger was scored on.

    Reuses the score stored on the champion's version when it was computed on the same faces
    (same fingerprint); otherwise scores the champion now.
    """
    metric = params.register.metric
    tags = dict(champion.tags or {})
    if tags.get("test_faces_sha256") and tags["test_faces_sha256"] == report.get("faces_sha256"):
        stored = tags.get(f"test_{metric}")
        if stored is not None:
            return float(stored)
    from emonext.data.dataset import load_folder
    from emonext.evaluation.evaluate import evaluate_dataset

    model_name = params.register.model_name
    champion_checkpoint = read_checkpoint(
        fetch_checkpoint(f"models:/{model_name}/{champion.version}", params.register.effective_tracking_uri())
    )
    dataset, _ = load_folder(
        params.data.root,
        champion_checkpoint.data_config.model_copy(update={"max_per_class": None}),
        params.evaluate.split,
    )
    if tuple(dataset.classes) != tuple(champion_checkpoint.classes):
        return None
    with tempfile.TemporaryDirectory() as folder:
        result = evaluate_dataset(champion_checkpoint, dataset, Path(folder), device=params.train.device)
    logger.info(
        "champion v%s scores %s %.4f on the current test faces",
        champion.version,
        metric,
        result.report.accuracy,
    )
    return float(getattr(result.report, metric))


def _run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


# --------------------------------------------------------------------------------------------
# Loader


@dataclass(frozen=True)
class LoadedModel:
    """A model resolved from any reference, ready for inference.

    Attributes:
        uri: The reference as given.
        checkpoint: Weights, config and classes.
        version: Registry version (None for runs and local files).
        run_id: MLflow run that logged it (None for local files).
    """

    uri: str
    checkpoint: Checkpoint
    version: str | None = None
    run_id: str | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.classes

    def predictor(self, device: str = "cpu", batch_size: int = 64, **options: Any) -> Any:
        """An :class:`emonext.predict.EmotionPredictor` for this model.

        ``options`` go to its constructor (``face_config``, ``classifier``, ``detector``).
        """
        from emonext.predict import EmotionPredictor

        return EmotionPredictor(self.checkpoint, device=device, batch_size=batch_size, **options)


def load_model(
    uri: str | Path, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> LoadedModel:
    """Load a model from the registry, an MLflow run or a local checkpoint.

    Args:
        uri: ``models:/NAME@ALIAS`` (e.g. ``models:/emonext@champion``), ``models:/NAME/VERSION``,
            ``builtin`` (the model shipped with the package),
            ``models:/NAME`` (latest version), ``runs:/RUN_ID/model``, a checkpoint file, a
            training output folder or a downloaded MLflow model folder.
        tracking_uri: MLflow store; None reads ``MLFLOW_TRACKING_URI``, else the ``register``
            section of ``./params.yaml``.
        cache_dir: Where registry downloads are kept; None reads ``EMONEXT_MODEL_CACHE``, else
            ``~/.cache/emonext/models``.

    Raises:
        RegistryError: The registry is unreachable, or the model, version, alias or run does not exist.
        CheckpointError: The file is missing or is not a compatible emonext checkpoint.
    """
    reference = str(uri)
    version, run_id = None, None
    if reference == BUILTIN_URI:
        return LoadedModel(reference, read_checkpoint(BUILTIN_DIR / BUILTIN_WEIGHTS))
    match = _MODELS_URI.match(reference)
    if match or reference.startswith("runs:/"):
        store = tracking_uri or default_tracking_uri()
        path, version, run_id = _fetch(reference, store, cache_dir)
    else:
        path = fetch_checkpoint(reference)
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"{reference}: incompatible model: {error}") from None
    return LoadedModel(reference, checkpoint, version, run_id)


def load_default_model(uri: str | None = None, tracking_uri: str | None = None) -> LoadedModel:
    """The model inference uses: ``uri`` when given, else the registry's champion when there is
    one, else the built-in model.

    Args:
        uri: Any reference :func:`load_model` accepts; None to choose as above.
        tracking_uri: MLflow store for the champion lookup (see :func:`load_model`).

    Raises:
        RegistryError, CheckpointError: ``uri`` was given and cannot be loaded.
    """
    if uri:
        return load_model(uri, tracking_uri)
    champion = f"models:/{_default_model_name()}@{CHAMPION}"
    try:
        return load_model(champion, tracking_uri)
    except (RegistryError, CheckpointError) as error:
        logger.info("using the built-in model (%s)", error)
        return load_model(BUILTIN_URI)


def _default_model_name() -> str:
    try:
        return load_params(DEFAULT_PARAMS_FILE).register.model_name
    except ConfigError:
        return "emonext"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the store configured in ``./params.yaml``.

    Raises:
        RegistryError: Neither is available.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    try:
        return load_params(DEFAULT_PARAMS_FILE).register.effective_tracking_uri()
    except ConfigError as error:
        raise RegistryError(
            f"no MLflow store to resolve a models:/ URI: set MLFLOW_TRACKING_URI ({error})"
        ) from None


def fetch_checkpoint(
    reference: str | Path, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> Path:
    """The local checkpoint file behind any model reference (see :func:`load_model`)."""
    reference = str(reference)
    if _MODELS_URI.match(reference) or reference.startswith("runs:/"):
        return _fetch(reference, tracking_uri or default_tracking_uri(), cache_dir)[0]
    path = Path(reference).expanduser()
    if (path / "MLmodel").is_file():
        return _checkpoint_in_model_dir(path, reference)
    if ":/" in reference and not path.exists():
        raise RegistryError(
            f"{reference}: unsupported model URI; use models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or a checkpoint path"
        )
    return resolve_checkpoint_path(path)


def _fetch(reference: str, uri: str, cache_dir: Path | None) -> tuple[Path, str | None, str | None]:
    client = tracking_client(uri, create=False)
    store_key = hashlib.sha256(uri.encode()).hexdigest()[:12]
    root = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / store_key
    models = _MODELS_URI.match(reference)
    if models:
        name = models["name"]
        with registry_errors(uri, reference):
            if models["alias"]:
                try:
                    model_version = client.get_model_version_by_alias(name, models["alias"])
                except Exception:
                    known = sorted(client.get_registered_model(name).aliases)
                    raise RegistryError(
                        f"{reference}: model {name!r} has no alias {models['alias']!r} "
                        f"(aliases: {', '.join(known) or 'none'}) in the registry at {uri}"
                    ) from None
            elif models["version"] and models["version"] != "latest":
                model_version = client.get_model_version(name, models["version"])
            else:
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise RegistryError(f"{reference}: no registered model {name!r} in the registry at {uri}")
                model_version = max(versions, key=lambda item: int(item.version))
        version = str(model_version.version)
        target = root / name / version
        source = f"models:/{name}/{version}"
        run_id = model_version.run_id
    else:
        runs = _RUNS_URI.match(reference)
        if not runs:
            raise RegistryError(f"{reference}: expected runs:/RUN_ID/PATH")
        with registry_errors(uri, reference):
            client.get_run(runs["run_id"])
        version, run_id, source = None, runs["run_id"], reference
        target = root / "runs" / runs["run_id"] / runs["path"].strip("/")
    if not (target / "MLmodel").is_file():
        _download(source, target, uri)
    return _checkpoint_in_model_dir(target, reference), version, run_id


def _download(source: str, target: Path, uri: str) -> None:
    """Download a model folder into the cache atomically: a crash never leaves half a model."""
    import mlflow

    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with registry_errors(uri, source):
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging))
        downloaded = staging if (staging / "MLmodel").is_file() else next(staging.rglob("MLmodel")).parent
        os.replace(downloaded, target)
        logger.info("cached %s in %s", source, target)
    except StopIteration:
        raise RegistryError(f"{source}: is not an MLflow model (no MLmodel file)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checkpoint_in_model_dir(folder: Path, reference: str) -> Path:
    found = sorted(folder.glob("artifacts/*.safetensors")) or sorted(folder.rglob("*.safetensors"))
    if not found:
        raise CheckpointError(f"{reference}: the MLflow model at {folder} holds no emonext checkpoint")
    return found[0]


__all__ = [
    "BUILTIN_URI",
    "CHALLENGER",
    "CHAMPION",
    "LoadedModel",
    "Registration",
    "RegistryError",
    "default_tracking_uri",
    "fetch_checkpoint",
    "load_default_model",
    "load_model",
    "register_model",
]
