"""Pretrained backbone weights: from a local file or from timm's hub.

Local files may be timm state dicts (``.safetensors``, ``.pth``, ``.bin``) or the official
ConvNeXt release format (``{"model": {...}}`` with ``downsample_layers.*`` keys), which timm's
``checkpoint_filter_fn`` converts. Files are read with ``weights_only=True``: never unpickled code.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.convnext import checkpoint_filter_fn
from torch import nn

logger = logging.getLogger(__name__)

HUB = "hub"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be found, read or matched to the backbone."""


@dataclass(frozen=True)
class LoadedWeights:
    """How a weights file matched the backbone."""

    source: str
    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only torch file, unwrapping
    ``{"model": ...}`` / ``{"state_dict": ...}`` containers."""
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means the same thing to the user
        raise PretrainedWeightsError(f"{path}: not a readable weights file ({error})") from None
    for container in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: expected a mapping of parameter names to tensors")
    return state


def load_backbone_weights(backbone: nn.Module, source: str | Path) -> LoadedWeights:
    """Load pretrained weights into a timm backbone, reporting what did not match.

    Classifier weights (``head.fc.*``) are never loaded: the emotion head is trained from scratch.

    Args:
        backbone: The timm model (e.g. ``EmoNeXt.backbone``).
        source: ``"hub"`` for timm's hub (needs network access) or a path to a weights file.

    Returns:
        Counts and names of loaded, missing, unexpected and shape-mismatched keys.

    Raises:
        PretrainedWeightsError: The file is unreadable, the hub is unreachable, or no key matched.
    """
    if str(source) == HUB:
        state = _hub_state_dict(backbone)
        label = f"timm hub ({backbone.pretrained_cfg.get('architecture')})"
    else:
        path = Path(source)
        state = read_state_dict(path)
        label = str(path)
    if _is_convnext(backbone):
        # A file that is no ConvNeXt checkpoint stays as is: the key matching below reports it.
        with contextlib.suppress(KeyError, RuntimeError):
            state = checkpoint_filter_fn(state, backbone)

    own = backbone.state_dict()
    usable: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    unexpected: list[str] = []
    for key, tensor in state.items():
        if key.startswith("head.fc."):
            continue
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != tensor.shape:
            mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = tensor
    if not usable:
        raise PretrainedWeightsError(
            f"{label}: no parameter matches the backbone {type(backbone).__name__} "
            f"(first keys in file: {list(state)[:5]})"
        )
    backbone.load_state_dict(usable, strict=False)
    missing = [key for key in own if key not in usable and not key.startswith("head.fc.")]
    result = LoadedWeights(label, len(usable), missing, unexpected, mismatched)
    logger.info("pretrained weights from %s: %d tensors loaded", label, len(usable))
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            logger.warning("pretrained weights from %s: %d %s keys: %s", label, len(keys), name, keys[:10])
    return result


def _is_convnext(backbone: nn.Module) -> bool:
    return type(backbone).__name__ == "ConvNeXt"


def _hub_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    name = backbone.pretrained_cfg.get("architecture") or type(backbone).__name__.lower()
    tag = backbone.pretrained_cfg.get("tag")
    full_name = f"{name}.{tag}" if tag else name
    try:
        reference = timm.create_model(full_name, pretrained=True, num_classes=0)
    except Exception as error:  # network, hub and cache errors all mean "not available here"
        raise PretrainedWeightsError(
            f"could not download pretrained weights for {full_name} from timm's hub ({type(error).__name__}: "
            f"{error}). Offline? Download them elsewhere and set model.pretrained to the file's path."
        ) from None
    return reference.state_dict()
