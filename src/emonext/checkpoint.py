"""Model checkpoints: weights + configuration + class list, never a pickled module.

Two formats, both readable without executing code:

* ``*.safetensors`` (best model, inference): tensors plus string metadata holding the params and
  classes as JSON;
* ``*.pt`` (resumable training state): a ``torch.save`` dict of tensors and plain values, read
  back with ``torch.load(weights_only=True)``.

A ``.safetensors`` checkpoint may hold compact weights (:func:`compact_weights`): float16, or int8
with a float32 scale per output channel, which :func:`read_checkpoint` turns back into float32.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from emonext.config import ConfigError, DataConfig, ModelConfig, Params, section_from_dict
from emonext.fileio import atomic_write
from emonext.models import EmotionModel, create_model

CHECKPOINT_FORMAT = "emonext-checkpoint/1"
BEST_CHECKPOINT = "best.safetensors"
LAST_CHECKPOINT = "last.pt"
#: The safetensors metadata entry holding format, params, classes and metadata as JSON.
HEADER_KEY = "emonext"
#: Prefix of the per-output-channel scale stored next to each int8 weight.
INT8_SCALE_PREFIX = "int8_scale."


class WeightsDtype(StrEnum):
    """How :func:`compact_weights` stores the weights of a shipped copy."""

    float16 = "float16"
    int8 = "int8"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model it describes."""


@dataclass(frozen=True)
class Checkpoint:
    """Contents of a checkpoint file.

    Only the ``model`` and ``data`` sections of the stored params are validated: they describe
    the network and its input, and the other sections may change between versions without
    making older checkpoints unreadable. ``params`` keeps the full stored dict for provenance.
    """

    path: Path
    model_config: ModelConfig
    data_config: DataConfig
    classes: tuple[str, ...]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    params: dict[str, Any]


def save_model_checkpoint(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    params: Params | Mapping[str, Any],
    classes: tuple[str, ...],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write model weights with their params and classes as ``.safetensors``.

    The header is one metadata entry holding key-sorted JSON: safetensors stores metadata in a
    hash map whose order changes between processes, and the same weights must give the same file
    (DVC, the Prefect cache and the registry compare checkpoints by content hash).
    """
    document = {
        "format": CHECKPOINT_FORMAT,
        # A mapping: the params stored in another checkpoint, re-saved as they are (provenance).
        "params": params.model_dump(mode="json") if isinstance(params, Params) else dict(params),
        "classes": list(classes),
        "metadata": dict(metadata or {}),
    }
    header = {HEADER_KEY: json.dumps(document, sort_keys=True)}
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=header))
    return path


def compact_weights(
    state_dict: Mapping[str, torch.Tensor], dtype: WeightsDtype, min_int8_elements: int = 1024
) -> dict[str, torch.Tensor]:
    """A smaller copy of ``state_dict`` for shipping (the built-in model).

    ``float16`` halves every floating tensor. ``int8`` quantizes each weight with at least
    ``min_int8_elements`` values and two or more dimensions (convolution kernels, linear layers)
    symmetrically per output channel, max-abs scaled, and stores its float32 scales under
    :data:`INT8_SCALE_PREFIX` + key; the other floating tensors (norms, biases) become float16.
    Integer tensors (counters) are kept as they are.

    Args:
        state_dict: float32 weights.
        dtype: ``float16`` or ``int8``.
        min_int8_elements: Smaller weights stay float16 (their scales would cost more than int8 saves).
    """
    compact: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not value.is_floating_point():
            compact[key] = value
        elif dtype == WeightsDtype.int8 and value.ndim >= 2 and value.numel() >= min_int8_elements:
            rows = value.detach().float().reshape(value.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
            quantized = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
            compact[key] = quantized.reshape(value.shape)
            compact[INT8_SCALE_PREFIX + key] = scale
        else:
            compact[key] = value.half()
    return compact


def _dequantize_int8(path: Path, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the int8 part of :func:`compact_weights` (float32 weights; other tensors unchanged)."""
    scales = {
        key.removeprefix(INT8_SCALE_PREFIX): value
        for key, value in state_dict.items()
        if key.startswith(INT8_SCALE_PREFIX)
    }
    unscaled = [key for key, value in state_dict.items() if value.dtype == torch.int8 and key not in scales]
    if unscaled:
        raise CheckpointError(f"{path}: int8 weights without their scales (e.g. {unscaled[:3]})")
    if not scales:
        return state_dict
    weights: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in scales:
            weights[key] = value.float() * scales[key].reshape(-1, *([1] * (value.ndim - 1)))
        elif not key.startswith(INT8_SCALE_PREFIX):
            weights[key] = value
    return weights


def save_training_state(path: Path, state: Mapping[str, Any]) -> Path:
    """Write a resumable training state (tensors and plain values only) atomically."""
    atomic_write(path, lambda temporary: torch.save(dict(state), temporary))
    return path


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable for any reason: same message to the user
        raise CheckpointError(f"{path}: not a readable training state ({error})") from None


def resolve_checkpoint_path(reference: str | Path) -> Path:
    """Accept a checkpoint file or a training output folder (its ``best.safetensors``)."""
    path = Path(reference)
    if path.is_dir():
        for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: folder has no {BEST_CHECKPOINT} or {LAST_CHECKPOINT}")
    if not path.is_file():
        raise CheckpointError(f"{reference}: model checkpoint not found")
    return path


def read_checkpoint(reference: str | Path) -> Checkpoint:
    """Read weights, params and classes from a ``.safetensors`` or ``.pt`` checkpoint.

    Raises:
        CheckpointError: The file is missing, unreadable, or not an emonext checkpoint.
    """
    path = resolve_checkpoint_path(reference)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                header = dict(handle.metadata() or {})
            state_dict = _dequantize_int8(path, load_file(str(path)))
            if HEADER_KEY in header:
                document = json.loads(header[HEADER_KEY])
                header = {"format": document.get("format")}
                params_json = json.dumps(document.get("params")) if document.get("params") else None
                classes, metadata = document.get("classes"), dict(document.get("metadata") or {})
            else:  # written before the header became one sorted entry
                metadata = {
                    key: json.loads(value) for key, value in header.items() if key not in ("format", "params")
                }
                params_json, classes = header.get("params"), metadata.pop("classes", None)
        else:
            state = load_training_state(path)
            header = {"format": state.get("format")}
            state_dict = state.get("ema") or state.get("model") or {}
            params_json, classes = state.get("params"), state.get("classes")
            metadata = {"epoch": state.get("epoch")}
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    if header.get("format") != CHECKPOINT_FORMAT or not params_json or not classes:
        raise CheckpointError(
            f"{path}: not an emonext checkpoint "
            f"(format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    params = json.loads(params_json)
    source = f"{path} (stored params)"
    try:
        model_config = section_from_dict(ModelConfig, params.get("model"), "model", source)
        data_config = section_from_dict(DataConfig, params.get("data"), "data", source)
    except ConfigError as error:
        raise CheckpointError(
            f"{path}: stored configuration is not valid for this version:\n{error}"
        ) from None
    return Checkpoint(path, model_config, data_config, tuple(classes), state_dict, metadata, params)


def model_from_checkpoint(checkpoint: Checkpoint) -> EmotionModel:
    """Rebuild the network described by ``checkpoint`` and load its weights (eval mode).

    Raises:
        CheckpointError: The weights do not fit the described architecture.
    """
    model_config = checkpoint.model_config.model_copy(update={"pretrained": None})
    model = create_model(model_config, num_classes=len(checkpoint.classes))
    try:
        result = model.load_state_dict(checkpoint.state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(
            f"{checkpoint.path}: weights do not fit {model_config.architecture}: {error}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{checkpoint.path}: weights do not fit {model_config.architecture}: "
            f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    return model.eval()
