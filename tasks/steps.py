"""One Prefect task per pipeline step: scrape, clean, split, train, evaluate, register.

Every task takes the params file and its ``section.key=value`` overrides, the same two things
every ``emonext`` command takes, and loads the validated :class:`~emonext.config.Params` itself:
two plain, JSON-serialisable parameters that show readably in the Prefect UI and that a served
deployment can store. The steps hand data to each other through the folders ``params.yaml``
names, exactly as the DVC stages do, so each task returns only a JSON-ready summary.

Caching (:mod:`tasks.caching`) follows each step's ``dvc.yaml`` stage: the params keys it reads,
the library code that implements it, and the content hashes of what it reads and writes.

* **scrape** is never cached. Disabled (``scrape.enabled: false``, the default) it does no
  network and keeps the folder, in well under a second. Enabled, its real input is the web,
  which no hash of ours describes: the same params can find new images next week, and the
  schedule exists to pick them up. The library already resumes at a finer grain than a cache
  could (URLs final in the manifest are not fetched again, complete keywords not searched
  again), and the clean step's key is the content hash of the scraped folder, so an unchanged
  scrape still lets everything downstream hit its cache.
* **clean, split, train, evaluate** are cached on params + code + input and output hashes.
* **register** is cached too, on the checkpoint's and the evaluation report's hashes, the
  ``register`` params and the effective tracking URI. Registering is not idempotent (every call
  makes a new model version), so an unchanged pipeline (a weekly schedule with no new data) must
  not register the same checkpoint again, and neither must going back to params tried before
  (its checkpoint is registered already). A new checkpoint, a new evaluation (other test faces),
  other register settings or another tracking server do register, and so does a missing
  ``registration.json`` or local MLflow store (required to exist, but not hashed: see
  ``_register_requires``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.tasks import exponential_backoff

from emonext.config import Params, load_params
from tasks import attach_library_logs
from tasks.caching import StepCachePolicy, StepSpec, remember
from tasks.runners import started_task_runner, task_mapper

attach_library_logs()

# Files the library writes. Literals, because importing the modules that define them loads torch,
# timm and MLflow (about 5 s) into every process that merely imports the flows (``serve``, the
# DVC stage-list test); tests/flows checks them against the library's constants.
BEST_CHECKPOINT = "best.safetensors"
LAST_CHECKPOINT = "last.pt"
REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.json"
CONFUSION_PLOT = "confusion.png"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
REGISTRATION_FILE = "registration.json"
CLEAN_MANIFEST = "manifest.csv"
CLEAN_IMAGES = "images"

S = TypeVar("S")
R = TypeVar("R")
#: Items per clean shard, relative to the library's own pool: each shard is a Prefect task run
#: (API calls, pickling, a run context rebuilt in the worker), about 0.1-0.2 s on 2 cores, as much
#: as the work of a 256-face shard (bench/results/clean_task_runners.md).
SHARD_SCALE = 8


def _clean_inputs(params: Params) -> dict[str, Path]:
    return {f"source:{source.name}": source.path for source in params.clean.sources}


def _split_inputs(params: Params) -> dict[str, Path]:
    # What split reads of the clean output: not report.json, whose timings change on every run.
    clean_dir = params.clean.output_dir
    return {"clean/manifest.csv": clean_dir / CLEAN_MANIFEST, "clean/images": clean_dir / CLEAN_IMAGES}


def _train_inputs(params: Params) -> dict[str, Path]:
    inputs = {"data.root": params.data.root}
    if params.model.pretrained not in (None, "hub"):
        inputs["model.pretrained"] = Path(str(params.model.pretrained))
    return inputs


def _train_outputs(params: Params) -> dict[str, Path]:
    folder = params.train.output_dir
    names = (BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, SUMMARY_FILE)
    return {f"train/{name}": folder / name for name in names}


def _evaluate_inputs(params: Params) -> dict[str, Path]:
    return {"checkpoint": params.train.output_dir / BEST_CHECKPOINT, "data.root": params.data.root}


def _evaluate_outputs(params: Params) -> dict[str, Path]:
    folder = params.evaluate.output_dir
    return {f"evaluate/{name}": folder / name for name in (REPORT_FILE, CONFUSION_FILE, CONFUSION_PLOT)}


def _register_inputs(params: Params) -> dict[str, Path]:
    return {
        "checkpoint": params.train.output_dir / BEST_CHECKPOINT,
        "evaluation report": params.evaluate.output_dir / REPORT_FILE,
    }


def _register_requires(params: Params) -> dict[str, Path]:
    """What must exist for a cached registration to stand, without being hashed.

    ``registration.json`` is required but not hashed: it describes the *last* registration, so
    after trying other params and coming back (A, B, A) it describes B's version while A's
    checkpoint is registered already; hashing it would register A's checkpoint a second time.
    A local SQLite store that was deleted holds no version any more: register again. A server's
    store is not checked (no network in a cache key); its URI is part of the key instead.
    """
    required = {"registration": params.register.output_dir / REGISTRATION_FILE}
    uri = params.register.effective_tracking_uri()
    if uri.startswith("sqlite:///"):
        required["MLflow store"] = Path(uri.removeprefix("sqlite:///"))
    return required


SPECS: dict[str, StepSpec] = {
    spec.name: spec
    for spec in (
        StepSpec("scrape", code=("emonext.scraping",), params=("scrape", "data.classes")),
        StepSpec(
            "clean",
            code=("emonext.cleaning",),
            params=("clean", "data.classes", "data.image_size"),
            inputs=_clean_inputs,
            outputs=lambda params: {"clean": params.clean.output_dir},
        ),
        StepSpec(
            "split",
            code=("emonext.splitting",),
            params=("split", "data.classes"),
            inputs=_split_inputs,
            outputs=lambda params: {"split": params.split.output_dir},
        ),
        StepSpec(
            "train",
            code=("emonext.training", "emonext.models", "emonext.data", "emonext.checkpoint"),
            params=("data", "augment", "model", "train"),
            inputs=_train_inputs,
            outputs=_train_outputs,
        ),
        StepSpec(
            "evaluate",
            code=("emonext.evaluation", "emonext.checkpoint"),
            params=("evaluate", "data.root"),
            inputs=_evaluate_inputs,
            outputs=_evaluate_outputs,
        ),
        StepSpec(
            "register",
            code=("emonext.registry", "emonext.mlflow_pyfunc", "emonext.mlflow_pyfunc_entry"),
            params=("register",),
            inputs=_register_inputs,
            requires=_register_requires,
            extras=lambda params: {"tracking_uri": params.register.effective_tracking_uri()},
        ),
    )
}


def _cache(step: str) -> StepCachePolicy:
    return StepCachePolicy(spec=SPECS[step])


def _scrape_error_is_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry the web's failures, not deterministic ones (bad settings, a corrupt manifest)."""
    from emonext.scraping.manifest import ManifestError

    error = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(error, ValueError | ManifestError)


@task(name="scrape", cache_policy=NO_CACHE, retry_condition_fn=_scrape_error_is_transient)
def scrape(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Download images per emotion keyword into ``scrape.output_dir`` (a no-op when disabled).

    Retries come from ``orchestration.scrape_retries`` and ``retry_backoff``: use
    :func:`configured` to get the task with them.

    Returns:
        The scrape summary (per class counts, download speed) and the output folder.
    """
    from emonext.scraping import scrape as run_scrape

    params = load_params(params_file, overrides or [])
    summary = run_scrape(params.scrape, params.scrape.classes or params.data.classes, progress=False)
    return {
        **summary.to_dict(),
        "enabled": params.scrape.enabled,
        "output_dir": str(params.scrape.output_dir),
    }


# The results (hashes, thumbnails) go straight back to the clean task: never written to the result
# store, whatever PREFECT_RESULTS_PERSIST_BY_DEFAULT says.
@task(
    name="clean-shard",
    task_run_name="clean-shard-{shard.number}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def clean_shard(function: Callable[[S], R], shard: S) -> R:
    """Decode, face-crop, blur-check and hash one shard of the clean step's inputs.

    ``function`` is :func:`emonext.cleaning.pipeline.process_shard` and ``shard`` a
    :class:`~emonext.cleaning.pipeline.CleanShard`, handed over by the library's ``map_shards``
    call. Not cached (only the whole step is) and not retried: a shard that fails fails the step,
    which leaves the previous ``clean.output_dir`` as it was (the faces are written into a
    staging folder, swapped in only after every shard succeeded).

    Returns:
        Per item of the shard, its face results.
    """
    return function(shard)


@task(name="clean", cache_policy=_cache("clean"))
def clean(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Crop, de-duplicate and filter the sources into ``clean.output_dir``.

    In a flow run, the per-image work runs as :func:`clean_shard` task runs on the task runner
    ``orchestration.task_runner`` names (:mod:`tasks.runners`): a process or thread pool of
    ``clean.workers``, or Ray. Outside a flow run (the task called on its own) the library runs
    them in its own process pool, as ``emonext clean`` does. The outputs are the same either way.

    Returns:
        The cleaning report (kept and dropped counts per reason, class and source).
    """
    from emonext.cleaning import clean as run_clean

    params = load_params(params_file, overrides or [])
    if FlowRunContext.get() is None:
        report = run_clean(params.clean, params.data, progress=False).to_dict()
    else:
        kind = params.orchestration.task_runner
        with started_task_runner(params) as (runner, workers):
            get_run_logger().info("clean: shards run as %r task runs on %s", clean_shard.name, kind)
            report = run_clean(
                params.clean,
                params.data,
                progress=False,
                map_shards=task_mapper(runner, clean_shard),
                workers=workers,
                executor=f"prefect {kind}",
                shard_scale=SHARD_SCALE,
            ).to_dict()
    remember(SPECS["clean"], params, report)
    return report


@task(name="split", cache_policy=_cache("split"))
def split(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Split the kept faces into ``split.output_dir``/{train,val,test}.

    Returns:
        The split report (per split and class counts).
    """
    from emonext.splitting import split as run_split

    params = load_params(params_file, overrides or [])
    report = run_split(params.split, params.clean.output_dir, params.data).to_dict()
    remember(SPECS["split"], params, report)
    return report


@task(name="train", cache_policy=_cache("train"))
def train(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train the configured model on ``data.root`` into ``train.output_dir``.

    Returns:
        The training summary, the per-epoch metrics and the checkpoint paths.
    """
    from emonext.training import train as run_training

    params = load_params(params_file, overrides or [])
    result = run_training(params, progress=False)
    summary = {
        "summary": result.summary(),
        "history": [asdict(epoch) for epoch in result.history],
        "output_dir": str(result.output_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "model": f"{params.model.arch}/{params.model.backbone}",
    }
    get_run_logger().info(
        "train: best val accuracy %.4f at epoch %d of %d",
        result.best_val_accuracy,
        result.best_epoch,
        len(result.history),
    )
    remember(SPECS["train"], params, summary)
    return summary


@task(name="evaluate", cache_policy=_cache("evaluate"))
def evaluate(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Score the trained checkpoint on ``evaluate.split`` of ``data.root``.

    Returns:
        The classification report (accuracy, macro-F1, per class scores) and the report files.
    """
    from emonext.evaluation.evaluate import run_evaluation

    params = load_params(params_file, overrides or [])
    result = run_evaluation(params)
    summary = {
        "split": params.evaluate.split,
        "report": result.report.to_dict(),
        "report_file": str(result.report_file),
        "confusion_file": str(result.confusion_file),
        "confusion_plot": str(result.confusion_plot),
    }
    remember(SPECS["evaluate"], params, summary)
    return summary


@task(name="register", cache_policy=_cache("register"))
def register(params_file: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Log the run to MLflow, register a new model version and decide the champion.

    Returns:
        The registration: model name, version, run id, aliases, promotion decision and reason.
    """
    from emonext.registry import register_model

    params = load_params(params_file, overrides or [])
    registration = register_model(params).to_dict()
    remember(SPECS["register"], params, registration)
    return registration


#: The step tasks by name, in pipeline order.
STEP_TASKS: dict[str, Task[..., dict[str, Any]]] = {
    step.name: step for step in (scrape, clean, split, train, evaluate, register)
}


def configured(step: Task[..., dict[str, Any]], params: Params) -> Task[..., dict[str, Any]]:
    """The step task with the run options ``params.orchestration`` sets.

    Task options are fixed when the module is imported, but retries are configuration: the
    scrape task gets ``orchestration.scrape_retries`` retries, waiting ``retry_backoff`` seconds
    and doubling each time (``prefect.tasks.exponential_backoff``). Other steps are returned as
    they are: their failures (bad data, a full disk) do not go away by waiting.
    """
    if step.name != "scrape":
        return step
    settings = params.orchestration
    delays = exponential_backoff(settings.retry_backoff)(settings.scrape_retries)
    return step.with_options(retries=settings.scrape_retries, retry_delay_seconds=delays or 0)
