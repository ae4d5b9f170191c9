"""Hyper-parameter search with Ray Tune: seeded random search, ASHA early stopping, MLflow runs.

:func:`run_tune` trains one model per trial: the project's params plus the trial's values for the
keys in ``tune.search_space``, drawn by a random search seeded with ``tune.seed`` (the same params
draw the same configurations). Every trial reports its validation metrics after each epoch, and
ASHA (``tune.grace_period``, ``tune.reduction_factor``) stops the trials that fall behind at each
rung; ``tune.metric`` is maximised.

* **Ray**: the driver runs inside :func:`emonext.ray_engine.ray_session`, a local engine with
  ``ray.num_cpus`` CPUs or the cluster at ``ray.address``. The faces are decoded once, in the
  driver, and shared with the trials through Ray's object store (``tune.with_parameters``).
  Each trial reserves ``tune.cpus_per_trial`` CPUs (also its torch threads) and
  ``tune.gpus_per_trial`` GPUs, and trains in its own Ray working directory (node-local
  scratch); only its best model goes to ``tune.storage_path``, as a Tune checkpoint.
* **MLflow**: one parent run named ``tune.name`` in ``register.experiment`` (base params, search
  space and, at the end, the best values, metric and output files) and one nested run per trial
  (its values as params, its metrics per epoch). Every write comes from the driver, through
  :class:`TrialRecorder`: a SQLite store does not take concurrent writers, and Ray's own
  ``MLflowLoggerCallback`` (driver-side too) would log every key of Tune's results (pid,
  timestamps, the config...) as metrics, one request per value.
* **Outputs** (``tune.output_dir``, each file written atomically): ``best_params.yaml``, a
  complete params file (absolute paths) that ``emonext train --params`` and
  :func:`~emonext.config.load_params` accept, equal to the base params plus the best values;
  ``best.json``, the best values, metric, trial and checkpoint with the equivalent ``--set`` and
  ``dvc exp run -S`` options; ``trials.csv``, one row per trial.

A trial that fails (a NaN loss, a model the values do not fit) is recorded as failed and the
search goes on; the search fails only when every trial does.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from emonext.config import Params, flatten, params_from_dict, resolve_paths
from emonext.fileio import write_atomically, write_json
from emonext.ray_engine import check_reachable, ray_session

logger = logging.getLogger(__name__)

BEST_PARAMS_FILE = "best_params.yaml"
BEST_FILE = "best.json"
TRIALS_FILE = "trials.csv"
#: Tune's time attribute for ASHA: the epoch every trial reports.
TIME_ATTR = "epoch"
#: What every trial reports after each epoch, besides ``epoch`` (also its MLflow metrics).
REPORTED_METRICS = ("val_accuracy", "val_macro_f1", "train_loss", "train_accuracy", "lr")
#: A trial's fate in ``trials.csv``.
COMPLETED, STOPPED, FAILED = "completed", "stopped", "failed"

_PARENT_RUN_TAG = "mlflow.parentRunId"


@dataclass
class TrialRecord:
    """One trial as the driver saw it.

    Attributes:
        trial_id: Tune's id of the trial.
        values: The trial's values, by dotted params key.
        path: The trial's folder in the storage (where its checkpoint is).
        run_id: Its nested MLflow run.
        history: The metrics it reported, one dict per epoch.
        status: ``running``, ``completed``, ``stopped`` (by ASHA) or ``failed``.
        error: Why it failed.
        checkpoint: Its best model, in the storage.
    """

    trial_id: str
    values: dict[str, Any]
    path: str = ""
    run_id: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "running"
    error: str = ""
    checkpoint: str = ""

    def best(self, metric: str) -> float:
        """The best finite value of ``metric`` it reported (NaN when none)."""
        values = [row[metric] for row in self.history if math.isfinite(row.get(metric, math.nan))]
        return max(values, default=math.nan)

    def last(self, metric: str) -> float:
        return self.history[-1].get(metric, math.nan) if self.history else math.nan

    def best_epoch(self, metric: str) -> int:
        best = self.best(metric)
        return next((int(row[TIME_ATTR]) for row in self.history if row.get(metric) == best), 0)


@dataclass
class TuneOutcome:
    """What :func:`run_tune` found.

    Attributes:
        metric: The maximised metric (``tune.metric``).
        best_value: Its best value over all trials and epochs.
        best_values: The best trial's values, by dotted params key.
        best_trial: The best trial's id.
        best_epoch: The epoch it reached ``best_value``.
        best_checkpoint: Its best model (``best.safetensors`` in the storage).
        num_trials: Trials run.
        stopped_early: Trials ASHA stopped before ``train.epochs``.
        failed: Trials that failed.
        wall_seconds: Wall time of the whole search, data loading and outputs included.
        files: The output files by name (``best_params``, ``best``, ``trials``).
        storage_path: Where Ray Tune kept the trials' results and checkpoints.
        mlflow_run_id: The MLflow parent run.
        tracking_uri: The MLflow store.
        overrides: ``section.key=value`` overrides giving the best values.
        trials: One ``trials.csv`` row per trial.
    """

    metric: str
    best_value: float
    best_values: dict[str, Any]
    best_trial: str
    best_epoch: int
    best_checkpoint: str
    num_trials: int
    stopped_early: list[str]
    failed: list[str]
    wall_seconds: float
    files: dict[str, str]
    storage_path: str
    mlflow_run_id: str
    tracking_uri: str
    overrides: list[str]
    trials: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready values: a failed trial's missing metrics are None rather than NaN."""
        return _json_ready(asdict(self))


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ------------------------------------------------------------------------------------------------
# Search space and per-trial params


def search_space(params: Params) -> dict[str, Any]:
    """``tune.search_space`` as Ray Tune distributions, keyed by dotted params key (``train.lr``)."""
    space: dict[str, Any] = {}
    for section, keys in params.tune.search_space.items():
        for key, dimension in keys.items():
            name = f"{section}.{key}"
            if dimension.distribution == "choice":
                space[name] = tune.choice(list(dimension.values or ()))
            elif dimension.distribution == "loguniform":
                space[name] = tune.loguniform(dimension.low, dimension.high)
            else:
                space[name] = tune.uniform(dimension.low, dimension.high)
    return space


def with_values(params: Params, values: Mapping[str, Any]) -> Params:
    """``params`` with dotted-key values set, validated as a params file would be.

    The values go into the nested dict rather than through ``section.key=value`` override
    strings: YAML reads ``1e-05`` (no dot) as a string, and a float drawn by the search may be
    written just so.

    Raises:
        ConfigError: A value is invalid for its key.
    """
    raw = params.model_dump(mode="json")
    for key, value in values.items():
        section, name = key.split(".", 1)
        raw[section][name] = plain(value)
    return params_from_dict(raw, source="tune")


def plain(value: Any) -> Any:
    """A search value as a plain Python scalar (Tune draws NumPy floats and ints)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def yaml_scalar(value: Any) -> str:
    """``value`` as YAML reads it back, for ``--set`` and ``-S`` options (``1.0e-05``, not ``1e-05``)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True).strip()
    return text.removesuffix("...").strip()


# ------------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker)


def train_trial(config: dict[str, Any], params: Params, datasets: dict[str, Any], threads: int) -> None:
    """One trial: train with the trial's values, reporting to Tune after each epoch.

    An epoch whose model the trainer keeps as its best (by val accuracy) is reported with that
    model as a Tune checkpoint; Tune keeps one per trial, the best by ``tune.metric`` (the same
    model when the metric is ``val_accuracy``).

    Args:
        config: The trial's values, by dotted params key (drawn by Tune).
        params: The base params (absolute paths).
        datasets: The decoded faces by split, shared through Ray's object store.
        threads: Torch threads (the CPUs the trial reserves).
    """
    from emonext.checkpoint import BEST_CHECKPOINT
    from emonext.training import EpochMetrics, train

    folder = _trial_folder()
    trial = with_values(
        params, {**config, "train.output_dir": str(folder / "train"), "train.num_threads": threads}
    )
    best_score = -math.inf

    def report(metrics: EpochMetrics) -> None:
        nonlocal best_score
        values = {TIME_ATTR: metrics.epoch, **{key: getattr(metrics, key) for key in REPORTED_METRICS}}
        # The trainer's own selection rule: it rewrote best.safetensors only on a better score.
        score = metrics.val_accuracy if not math.isnan(metrics.val_accuracy) else metrics.train_accuracy
        if score <= best_score:
            tune.report(values)
            return
        best_score = score
        # A folder holding only the best model: Tune copies the whole folder to the storage, and
        # the trainer's folder also holds last.pt (optimizer and EMA state, several times larger).
        staging = folder / "tune-checkpoint"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _link_or_copy(trial.train.output_dir / BEST_CHECKPOINT, staging / BEST_CHECKPOINT)
            # report() persists the checkpoint before it returns, so the staging folder can go.
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    train(trial, datasets=datasets, on_epoch_end=report, progress=False)


def _trial_folder() -> Path:
    """The trial's own folder: its Ray working directory, node-local and not synced to storage.

    Ray makes it the trial's current directory unless ``RAY_CHDIR_TO_TRIAL_DIR=0``; then the
    trial folder Ray names (which it does sync to storage) is used instead.
    """
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        return Path.cwd()
    return Path(tune.get_context().get_trial_dir())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


# ------------------------------------------------------------------------------------------------
# Driver-side bookkeeping: ASHA decisions and MLflow runs


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers which trials it stopped before ``max_t``.

    Tune reports a trial ASHA stopped as terminated, exactly like one that ran all its epochs (or
    that the trainer's own early stopping ended), so the decision is recorded where it is made.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_epochs = kwargs["max_t"]
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(TIME_ATTR, 0) < self.max_epochs:
            self.stopped.add(trial.trial_id)
        return decision


class TrialRecorder(tune.Callback):
    """Records every trial's results and mirrors them into nested MLflow runs, from the driver.

    Args:
        client: An ``MlflowClient``, or None to record without MLflow.
        experiment_id: The MLflow experiment.
        parent_run_id: The search's parent run.
        name: The search's name (prefix of the trial runs' names).
        scheduler: The ASHA scheduler, to tell the trials it stopped.
        progress: Log each trial's epochs at INFO (else DEBUG).
    """

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        parent_run_id: str,
        name: str,
        scheduler: RecordingASHA,
        progress: bool,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.name = name
        self.scheduler = scheduler
        self.level = logging.INFO if progress else logging.DEBUG
        self.records: dict[str, TrialRecord] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (callbacks included) into the experiment folder; an MLflow
        # client holds a database engine, which does not pickle, and has no use in a resumed run.
        return {**self.__dict__, "client": None}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if trial.trial_id in self.records:  # a restarted trial keeps its run
            return
        values = {key: plain(value) for key, value in trial.config.items()}
        record = TrialRecord(trial.trial_id, values, path=str(trial.path))
        self.records[trial.trial_id] = record
        logger.log(self.level, "trial %s started: %s", trial.trial_id, _describe_values(values))
        if self.client is None:
            return
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.name}-{trial.trial_id}",
            tags={_PARENT_RUN_TAG: self.parent_run_id, "emonext.trial_id": trial.trial_id},
        )
        record.run_id = run.info.run_id
        self.client.log_batch(record.run_id, params=[Param(key, str(value)) for key, value in values.items()])

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        record = self.records[trial.trial_id]
        row = {key: float(result[key]) for key in (TIME_ATTR, *REPORTED_METRICS) if key in result}
        record.history.append(row)
        logger.log(
            self.level,
            "trial %s epoch %d: %s",
            trial.trial_id,
            int(row.get(TIME_ATTR, 0)),
            "  ".join(f"{key} {value:.4g}" for key, value in row.items() if key != TIME_ATTR),
        )
        if self.client is None or not record.run_id:
            return
        from mlflow.entities import Metric

        timestamp, step = int(time.time() * 1000), int(row.get(TIME_ATTR, 0))
        metrics = [
            Metric(key, value, timestamp, step)
            for key, value in row.items()
            if key != TIME_ATTR and math.isfinite(value)
        ]
        self.client.log_batch(record.run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        record = self.records.get(trial.trial_id)
        if record is None:
            return
        record.status = STOPPED if trial.trial_id in self.scheduler.stopped else COMPLETED
        epochs = len(record.history)
        logger.log(
            self.level,
            "trial %s %s after %d epoch(s)",
            trial.trial_id,
            "stopped by ASHA" if record.status == STOPPED else "completed",
            epochs,
        )
        self._end_run(record, "FINISHED", {"emonext.stopped_by_asha": str(record.status == STOPPED).lower()})

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        record = self.records.get(trial.trial_id)
        if record is None:
            return
        record.status = FAILED
        logger.warning("trial %s failed after %d epoch(s)", trial.trial_id, len(record.history))
        self._end_run(record, "FAILED", {})

    def tag_errors(self, records: list[TrialRecord]) -> None:
        """Tag the runs of failed trials with their errors (known once Tune's results are read)."""
        for record in records:
            if record.error and self.client is not None and record.run_id:
                self.client.set_tag(record.run_id, "emonext.error", record.error[:5000])

    def close(self, status: str) -> None:
        """End the runs of trials that never finished (the search itself failed)."""
        for record in self.records.values():
            if record.status == "running":
                record.status = FAILED
                self._end_run(record, status, {})

    def _end_run(self, record: TrialRecord, status: str, tags: dict[str, str]) -> None:
        if self.client is None or not record.run_id:
            return
        for key, value in tags.items():
            self.client.set_tag(record.run_id, key, value)
        self.client.set_terminated(record.run_id, status)


def _describe_values(values: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
    )


# ------------------------------------------------------------------------------------------------
# The search


def run_tune(params: Params, progress: bool = True) -> TuneOutcome:
    """Search ``tune.search_space`` with Ray Tune and write the best configuration.

    Args:
        params: The full configuration; ``tune`` says how to search, ``ray`` where, ``register``
            which MLflow store and experiment get the runs.
        progress: Log every trial's epochs (else only starts, failures and the result).

    Returns:
        The best values, metric, trial and checkpoint, per-trial rows, output files, MLflow run.

    Raises:
        ConnectionError: ``ray.address`` names a cluster that cannot be reached.
        FileNotFoundError: ``data.root`` does not exist.
        ValueError: There are no validation faces to score the trials on.
        RuntimeError: Every trial failed (the message names the first one's error).
        RegistryError: The MLflow store failed.
    """
    from mlflow.entities import Param

    from emonext.registry import ensure_experiment, git_tags, registry_errors, tracking_client

    started = time.monotonic()
    # Trials run in their own working directories: relative paths must not depend on it.
    params = resolve_paths(params, Path.cwd())
    config = params.tune
    if params.ray.address is not None:
        check_reachable(params.ray.address)  # in seconds, before the faces are decoded
    datasets = _load_datasets(params)  # before a local Ray starts: a missing folder fails at once
    storage = _storage_path(params)
    uri = params.register.effective_tracking_uri()

    with ray_session(params.ray):
        _check_resources(params)
        client = tracking_client(uri, create=True)
        with registry_errors(uri, f"experiment {params.register.experiment!r}"):
            experiment_id = ensure_experiment(client, params.register, uri)
            parent_id = client.create_run(
                experiment_id,
                run_name=config.name,
                tags={"emonext.kind": "tune", "emonext.storage_path": storage, **git_tags(params.data.root)},
            ).info.run_id
        logger.info(
            "tune %r: %d trial(s) over %s; MLflow run %s in %s",
            config.name,
            config.num_samples,
            ", ".join(search_space(params)),
            parent_id,
            uri,
        )
        scheduler = RecordingASHA(
            time_attr=TIME_ATTR,
            max_t=params.train.epochs,
            grace_period=min(config.grace_period, params.train.epochs),
            reduction_factor=config.reduction_factor,
        )
        recorder = TrialRecorder(client, experiment_id, parent_id, config.name, scheduler, progress)
        try:
            with registry_errors(uri, f"run {parent_id}"):
                client.log_batch(
                    parent_id, params=[Param(key, value[:6000]) for key, value in flatten(params).items()]
                )
                client.log_dict(
                    parent_id, config.model_dump(mode="json")["search_space"], "search_space.json"
                )
            grid = _fit(params, datasets, storage, scheduler, recorder)
            records = _collect(recorder, grid, storage, config.metric)
            with registry_errors(uri, f"run {parent_id}"):
                recorder.tag_errors(records)
            outcome = _finish(params, records, parent_id, uri, storage, started)
            with registry_errors(uri, f"run {parent_id}"):
                _log_outcome(client, parent_id, outcome)
                client.set_terminated(parent_id, "FINISHED")
        except BaseException:
            # The error that stopped the search is the one to raise: when it is the store's, these
            # last writes may fail too.
            with contextlib.suppress(Exception):
                recorder.close("KILLED")
                client.set_terminated(parent_id, "FAILED")
            raise
    logger.info(
        "tune %r: best %s %.4f (trial %s: %s) of %d trial(s), %d stopped early, %d failed, in %.0f s",
        config.name,
        outcome.metric,
        outcome.best_value,
        outcome.best_trial,
        _describe_values(outcome.best_values),
        outcome.num_trials,
        len(outcome.stopped_early),
        len(outcome.failed),
        outcome.wall_seconds,
    )
    return outcome


def _check_resources(params: Params) -> None:
    """Fail when a local Ray cannot ever run one trial (Tune would wait for resources forever).

    A cluster is not checked: an autoscaling one adds the nodes that trials ask for.

    Raises:
        ValueError: ``tune.cpus_per_trial`` or ``tune.gpus_per_trial`` exceed the local engine's.
    """
    import ray

    if params.ray.address is not None:
        return
    available = ray.cluster_resources()
    for kind, key in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
        needed, present = getattr(params.tune, key), available.get(kind, 0.0)
        if needed > present:
            raise ValueError(
                f"tune.{key}={needed}: the local Ray has {present:g} {kind}(s) "
                f"(ray.num_cpus={params.ray.num_cpus}); lower it, or join a cluster with ray.address"
            )


def _load_datasets(params: Params) -> dict[str, Any]:
    """Decode the faces once, as the trainer would, for every trial to share."""
    from emonext.data.dataset import load_splits

    data = params.data
    splits = [data.train_split, data.val_split]
    datasets, _ = load_splits(data, splits if data.val_fraction > 0 else splits[:1], seed=params.train.seed)
    if data.val_split not in datasets or not len(datasets[data.val_split]):
        raise ValueError(
            f"{data.root}: tune scores trials on the {data.val_split!r} split, which is missing or empty; "
            "provide one or set data.val_fraction > 0"
        )
    return datasets


def _storage_path(params: Params) -> str:
    """``tune.storage_path`` (a URI as it is, a local path made absolute), else ``output_dir/ray``."""
    storage = params.tune.storage_path
    if storage and "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve() if storage else params.tune.output_dir.resolve() / "ray")


def _trial_dirname(trial: Any) -> str:
    # Short, stable folder names: Ray's default spells out every value and a timestamp.
    return f"trial_{trial.trial_id}"


def _fit(
    params: Params, datasets: dict[str, Any], storage: str, scheduler: RecordingASHA, recorder: TrialRecorder
) -> Any:
    config = params.tune
    # Ray warns when experiment snapshots are frequent, which keeping one checkpoint per trial
    # makes them on a small data set (epochs of seconds); its advice (keep more) does not apply.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    threads = max(1, math.ceil(config.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, params=params, datasets=datasets, threads=threads),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(params),
        tune_config=tune.TuneConfig(
            metric=config.metric,
            mode="max",
            num_samples=config.num_samples,
            scheduler=scheduler,
            # The limit goes to the generator itself (0 = none): Tune ignores
            # max_concurrent_trials when it is given a BasicVariantGenerator, with only a warning.
            search_alg=BasicVariantGenerator(random_state=config.seed, max_concurrent=config.max_concurrent),
            trial_name_creator=_trial_dirname,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=config.name,
            storage_path=storage,
            callbacks=[recorder],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=config.metric, checkpoint_score_order="max"
            ),
            # The recorder logs the trials' progress; Tune's status tables would repeat it.
            verbose=0,
        ),
    )
    # Tune prints its experiment header to stdout whatever the verbosity (and Ray echoes the
    # trials' stdout there too), but stdout is `emonext tune`'s JSON result: send both to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        return tuner.fit()


def _collect(recorder: TrialRecorder, grid: Any, storage: str, metric: str) -> list[TrialRecord]:
    """The recorder's trials, completed with their checkpoints and errors from Tune's results."""
    by_path = {record.path: record for record in recorder.records.values()}
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        record = recorder.records.get(str(trial_id)) or by_path.get(str(result.path))
        if record is None:
            continue
        if result.error is not None:
            record.status = FAILED
            cause = getattr(result.error, "cause", None) or result.error
            record.error = f"{type(cause).__name__}: {cause}".splitlines()[0]
        checkpoints = result.best_checkpoints or []
        if checkpoints:
            checkpoint, _ = max(checkpoints, key=lambda pair: _finite(pair[1].get(metric)))
            record.checkpoint = _checkpoint_location(checkpoint.path, storage)
    return sorted(recorder.records.values(), key=lambda record: record.trial_id)


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else -math.inf


def _checkpoint_location(path: str, storage: str) -> str:
    from emonext.checkpoint import BEST_CHECKPOINT

    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    folder = f"{scheme}://{path.lstrip('/')}" if scheme else path
    return f"{folder.rstrip('/')}/{BEST_CHECKPOINT}"


def _finish(
    params: Params, records: list[TrialRecord], run_id: str, uri: str, storage: str, started: float
) -> TuneOutcome:
    """Pick the best trial and write ``trials.csv``, ``best_params.yaml`` and ``best.json``."""
    config = params.tune
    metric = config.metric
    keys = list(search_space(params))
    rows = [_trial_row(record, keys, metric) for record in records]
    output_dir = config.output_dir
    trials_file = write_atomically(output_dir / TRIALS_FILE, _csv(rows))
    failed = [record for record in records if record.status == FAILED]
    scored = [record for record in records if record.status != FAILED and math.isfinite(record.best(metric))]
    if not scored:
        if failed and len(failed) == len(records):
            raise RuntimeError(
                f"tune {config.name!r}: all {len(records)} trial(s) failed; the first, {failed[0].trial_id}: "
                f"{failed[0].error or 'unknown error'} (every trial's error is in {trials_file})"
            )
        raise RuntimeError(f"tune {config.name!r}: no trial reported a finite {metric} (see {trials_file})")
    best = max(scored, key=lambda record: record.best(metric))
    best_params = with_values(params, best.values)
    # The validated values (what best_params.yaml holds), e.g. 64 rather than 64.0 for an int key.
    validated = best_params.model_dump(mode="json")
    best_values = {key: validated[key.split(".")[0]][key.split(".", 1)[1]] for key in keys}
    overrides = [f"{key}={yaml_scalar(value)}" for key, value in best_values.items()]
    best_params_file = output_dir / BEST_PARAMS_FILE
    header = (
        f"# emonext tune {config.name!r}: the base params plus trial {best.trial_id}'s values\n"
        f"# ({metric} {best.best(metric):.4f} at epoch {best.best_epoch(metric)}): "
        + ", ".join(overrides)
        + "\n# Train with it: emonext train --params "
        + shlex.quote(str(best_params_file))
        + "\n"
    )
    document = yaml.safe_dump(best_params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    write_atomically(best_params_file, header + document)
    best_file = output_dir / BEST_FILE
    files = {"best_params": str(best_params_file), "best": str(best_file), "trials": str(trials_file)}
    outcome = TuneOutcome(
        metric=metric,
        best_value=best.best(metric),
        best_values=best_values,
        best_trial=best.trial_id,
        best_epoch=best.best_epoch(metric),
        best_checkpoint=best.checkpoint,
        num_trials=len(records),
        stopped_early=[record.trial_id for record in records if record.status == STOPPED],
        failed=[record.trial_id for record in failed],
        wall_seconds=round(time.monotonic() - started, 1),
        files=files,
        storage_path=storage,
        mlflow_run_id=run_id,
        tracking_uri=uri,
        overrides=overrides,
        trials=rows,
    )
    write_json(
        best_file,
        {
            "metric": metric,
            "value": outcome.best_value,
            "trial_id": best.trial_id,
            "epoch": outcome.best_epoch,
            "checkpoint": best.checkpoint,
            "values": best_values,
            "overrides": overrides,
            "set_options": " ".join(f"--set {shlex.quote(item)}" for item in overrides),
            "train_command": f"emonext train --params {shlex.quote(str(best_params_file))}",
            "dvc_command": "dvc exp run " + " ".join(f"-S {shlex.quote(item)}" for item in overrides),
            "mlflow_run_id": run_id,
            "tracking_uri": uri,
        },
    )
    return outcome


def _trial_row(record: TrialRecord, keys: list[str], metric: str) -> dict[str, Any]:
    return {
        "trial_id": record.trial_id,
        "status": record.status,
        **{key: record.values.get(key) for key in keys},
        "epochs": len(record.history),
        f"best_{metric}": record.best(metric),
        f"last_{metric}": record.last(metric),
        "best_epoch": record.best_epoch(metric),
        "stopped_by_asha": record.status == STOPPED,
        "checkpoint": record.checkpoint,
        "error": record.error,
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _log_outcome(client: Any, run_id: str, outcome: TuneOutcome) -> None:
    """The search's result on its parent run: best metric and values, counts, output files."""
    from mlflow.entities import Metric, Param

    timestamp = int(time.time() * 1000)
    metrics = {
        f"best_{outcome.metric}": outcome.best_value,
        "num_trials": outcome.num_trials,
        "num_stopped_early": len(outcome.stopped_early),
        "num_failed": len(outcome.failed),
        "wall_seconds": outcome.wall_seconds,
    }
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
        params=[Param(f"best.{key}", str(value)) for key, value in outcome.best_values.items()],
    )
    client.set_tag(run_id, "emonext.best_trial", outcome.best_trial)
    for path in outcome.files.values():
        client.log_artifact(run_id, path)


__all__ = [
    "BEST_FILE",
    "BEST_PARAMS_FILE",
    "TRIALS_FILE",
    "RecordingASHA",
    "TrialRecord",
    "TrialRecorder",
    "TuneOutcome",
    "run_tune",
    "search_space",
    "train_trial",
    "with_values",
    "yaml_scalar",
]
