"""Content-addressed result caching for the pipeline steps.

A step's cached result is served only when everything it depends on is what it was when the step
last completed:

* its **params**: the ``params.yaml`` keys the step reads (the ``params:`` of its DVC stage);
* its **code**: the library modules that implement it (the ``src/emonext`` ``deps:`` of its stage);
* its **inputs**: the content hashes (:func:`emonext.fileio.content_hash`, DVC's md5) of the
  files and folders it reads: never their paths alone, since a path whose content changed must
  run the step again;
* its **outputs**: the content hashes of what it wrote. Missing outputs (deleted, or a fresh
  checkout) mean "run it"; outputs changed by something else (a manual ``emonext train`` into the
  same folder) mean the cached result no longer describes what is on disk, so it runs again too.

Prefect computes a task's cache key *before* the task runs, when the outputs are still the
previous ones, and would store the new result under that pre-run key. So
:class:`StepCachePolicy` hands Prefect a key only when a valid record already exists for the
current state (a hit, shown as a ``Cached`` task run); otherwise it returns no key and the task
runs. After a successful run the task calls :func:`remember`, which stores the result under the
key of the *post-run* state, valid for ``orchestration.cache_days``. The next run with nothing
changed computes that same key and hits.

``PREFECT_TASKS_REFRESH_CACHE=true`` makes every step run again (and refresh its record).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from emonext.config import ConfigError, Params, load_params
from emonext.fileio import content_hash

#: Bumped when the layout of the fingerprint changes, so old records are never misread.
FINGERPRINT_VERSION = 1


def _no_paths(params: Params) -> dict[str, Path]:
    return {}


def _no_extras(params: Params) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class StepSpec:
    """What a pipeline step reads and writes: the same facts as its stage in ``dvc.yaml``.

    Attributes:
        name: The step (and Prefect task) name.
        code: Library modules or packages implementing the step; their ``.py`` sources are hashed.
        params: Dotted ``params.yaml`` keys the step depends on (``"clean"``, ``"data.classes"``).
        inputs: Files and folders the step reads, by a readable name.
        outputs: Files and folders the step writes, by a readable name.
        requires: Paths that must exist for a cached result to be valid, but whose content is not
            part of the key (a shared store that other runs also write to).
        extras: Further values the result depends on that are not in ``params.yaml`` (the
            effective MLflow tracking URI, which an environment variable can change).
    """

    name: str
    code: tuple[str, ...]
    params: tuple[str, ...]
    inputs: Callable[[Params], dict[str, Path]] = _no_paths
    outputs: Callable[[Params], dict[str, Path]] = _no_paths
    requires: Callable[[Params], dict[str, Path]] = _no_paths
    extras: Callable[[Params], dict[str, Any]] = _no_extras


@dataclass(frozen=True)
class Fingerprint:
    """The state a step's result depends on.

    Attributes:
        step: The step name.
        document: Params, code, input and output hashes (JSON-ready); what the key hashes.
        missing_inputs: Inputs that do not exist (the step will fail with its own message).
        missing_outputs: Outputs (or required paths) that do not exist (the step must run).
    """

    step: str
    document: dict[str, Any] = field(default_factory=dict)
    missing_inputs: tuple[str, ...] = ()
    missing_outputs: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every input and output exists, so the state can be keyed."""
        return not self.missing_inputs and not self.missing_outputs

    @property
    def key(self) -> str | None:
        """The cache key of this state, or None when something is missing."""
        if not self.complete:
            return None
        canonical = json.dumps(self.document, sort_keys=True, separators=(",", ":"))
        return f"emonext-{self.step}-{hashlib.sha256(canonical.encode()).hexdigest()}"


def params_view(params: Params, keys: Iterable[str]) -> dict[str, Any]:
    """The JSON-ready values of dotted ``params.yaml`` keys (``"train"``, ``"data.classes"``).

    Raises:
        AttributeError: A key names no section or field.
    """
    view: dict[str, Any] = {}
    for key in keys:
        value: Any = params
        for part in key.split("."):
            value = getattr(value, part)
        view[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return to_jsonable_python(view)


@lru_cache(maxsize=64)
def source_hash(modules: tuple[str, ...]) -> str:
    """MD5 over the ``.py`` sources of library modules or packages (not ``__pycache__``).

    Cached per process: the code of a running process does not change under it.
    """
    digest = hashlib.md5()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ModuleNotFoundError(f"{name}: no such module to fingerprint")
        if spec.submodule_search_locations:
            roots = [Path(location) for location in spec.submodule_search_locations]
            files = sorted((file, root) for root in roots for file in root.rglob("*.py"))
        else:
            origin = Path(str(spec.origin))
            files = [(origin, origin.parent)]
        for file, root in files:
            digest.update(f"{name}:{file.relative_to(root).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _hashes(paths: dict[str, Path]) -> tuple[dict[str, str], list[str]]:
    hashes: dict[str, str] = {}
    missing: list[str] = []
    for name, path in paths.items():
        try:
            hashes[name] = content_hash(path)
        except FileNotFoundError:
            missing.append(f"{name} ({path})")
    return hashes, missing


def fingerprint(spec: StepSpec, params: Params) -> Fingerprint:
    """Hash what ``spec``'s result depends on, as it is on disk now."""
    inputs, missing_inputs = _hashes(spec.inputs(params))
    outputs, missing_outputs = _hashes(spec.outputs(params))
    missing_outputs += [
        f"{name} ({path})" for name, path in spec.requires(params).items() if not path.exists()
    ]
    document = {
        "version": FINGERPRINT_VERSION,
        "step": spec.name,
        "code": source_hash(spec.code),
        "params": params_view(params, spec.params),
        "extras": to_jsonable_python(spec.extras(params)),
        "inputs": inputs,
        "outputs": outputs,
    }
    return Fingerprint(spec.name, document, tuple(missing_inputs), tuple(missing_outputs))


def load_task_params(inputs: dict[str, Any]) -> Params:
    """The params a step task was called with (its ``params_file`` and ``overrides`` arguments)."""
    return load_params(inputs["params_file"], inputs.get("overrides") or [])


@dataclass
class StepCachePolicy(CachePolicy):
    """Serve a step's result from the cache only for an unchanged params/code/inputs/outputs state.

    See the module docstring: the key is returned only when a record for it exists, so Prefect
    never stores a result under the pre-run state; :func:`remember` stores it after the run.
    """

    spec: StepSpec | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The key of a valid cached result for the step's current state, or None to run it."""
        if self.spec is None:
            return None
        logger = get_run_logger()
        try:
            params = load_task_params(inputs)
        except ConfigError:
            return None  # the task fails on the same error, with its message, when it loads them
        state = fingerprint(self.spec, params)
        if state.missing_inputs:
            logger.info("%s: inputs missing (%s); running", self.spec.name, ", ".join(state.missing_inputs))
            return None
        if state.missing_outputs:
            logger.info("%s: outputs missing (%s); running", self.spec.name, ", ".join(state.missing_outputs))
            return None
        key = state.key
        if key is None or not get_result_store().exists(key):
            logger.info(
                "%s: params, code, inputs or outputs changed since its last cached run; running",
                self.spec.name,
            )
            return None
        logger.info("%s: params, code, inputs and outputs unchanged; using the cached result", self.spec.name)
        return key


def remember(spec: StepSpec, params: Params, result: Any) -> str | None:
    """Store a step's result under the key of the state it just produced.

    Called by the step task after the library call succeeded. Valid for
    ``orchestration.cache_days``.

    Returns:
        The key, or None when an output is missing (nothing is cached then).
    """
    logger = get_run_logger()
    state = fingerprint(spec, params)
    key = state.key
    if key is None:
        logger.warning(
            "%s: not cached, missing after the run: %s",
            spec.name,
            ", ".join(state.missing_inputs + state.missing_outputs),
        )
        return None
    expiration = datetime.now(UTC) + timedelta(days=params.orchestration.cache_days)
    # Annotated as Prefect's DateTime; a timezone-aware datetime validates as one (the record's
    # metadata is a pydantic model).
    get_result_store().write(result, key=key, expiration=expiration)  # type: ignore[arg-type]
    logger.info("%s: result cached until %s (key %s)", spec.name, f"{expiration:%Y-%m-%d %H:%M} UTC", key)
    return key
