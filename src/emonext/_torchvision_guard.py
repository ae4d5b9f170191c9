"""Let timm import on a CPU-only torch whose torchvision wheel is CUDA-linked.

PyPI's torchvision 0.28.0 wheel links its compiled extension (``torchvision/_C.so``) against
``libtorch_cuda.so``. On the CPU build of torch that library does not exist: the extension fails
to load silently and ``import torchvision`` (so ``import timm``) raises
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels.

When, and only when, the extension cannot be loaded, we declare the schemas of the two operators
torchvision registers fakes for. Pure-Python torchvision (transforms, ``ops.misc``) then works;
its compiled ops (``ops.nms``, ``io`` decoders) stay unavailable and emonext never uses them.

``import emonext`` installs an import hook that runs the guard just before torchvision is first
imported, by whichever module: processes that never touch torchvision (cleaning workers, the
config loader) do not pay for importing torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

_FAKE_REGISTERED_OPS = ("nms", "qnms")
_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _extension_path() -> Path | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    return candidates[0] if candidates else None


def install() -> bool:
    """Declare torchvision's operator schemas if its compiled extension cannot load.

    Returns:
        True if the schemas were declared, False if nothing had to be done (torchvision absent,
        already imported, or its extension loads).
    """
    if "torchvision" in sys.modules:
        return False
    extension = _extension_path()
    if extension is None:
        return False

    import torch

    try:
        # The same call torchvision makes: when it succeeds the real operators are registered.
        torch.ops.load_library(str(extension))
        return False
    except OSError as error:
        reason = str(error).splitlines()[0]

    declared = False
    for name in _FAKE_REGISTERED_OPS:
        if _op_exists(name):
            continue
        torch.library.define(f"torchvision::{name}", _SCHEMA)
        declared = True
    if declared:
        logger.debug("torchvision extension unavailable (%s); declared operator schemas", reason)
    return declared


class _BeforeTorchvisionImport(importlib.abc.MetaPathFinder):
    """Runs :func:`install` once, when ``torchvision`` is about to be imported; finds nothing."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision":
            uninstall_import_hook()
            install()
        return None


_HOOK = _BeforeTorchvisionImport()


def install_import_hook() -> None:
    """Run :func:`install` right before torchvision's first import (now, if it is imported already)."""
    if "torchvision" in sys.modules or _HOOK in sys.meta_path:
        return
    sys.meta_path.insert(0, _HOOK)


def uninstall_import_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True
