"""The face as EmoNeXt's Spatial Transformer Network aligns it, for inspection.

EmoNeXt (:class:`emonext.models.emonext.EmoNeXt`) starts with an affine STN
(:class:`~emonext.models.emonext.SpatialTransformer`, ``model.stn``) that zooms, shifts and
rotates the face before the ConvNeXt backbone sees it. Showing the warped face next to the input
explains some predictions (a face cropped too loosely gets zoomed in, a tilted one straightened)
and reveals a degenerate STN (a blank or mirrored output). The input goes through exactly the
evaluation preprocessing (:func:`emonext.data.transforms.eval_transform`), and the STN output is
mapped back from the normalised range to pixels; the STN pads with zeros in normalised space, so
areas outside the input appear as the normalisation mean (mid-gray).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

from emonext.checkpoint import Checkpoint, model_from_checkpoint
from emonext.cleaning.pipeline import resize_square
from emonext.config import ModelConfig
from emonext.data.transforms import eval_transform
from emonext.inference.annotate import side_by_side
from emonext.models.emonext import SpatialTransformer

logger = logging.getLogger(__name__)

#: Networks built from checkpoints for the STN view, by checkpoint identity (building one costs
#: ~0.1-1 s; a predictor with the onnx backend has no torch network to reuse).
_NETWORKS: dict[int, tuple[Checkpoint, nn.Module]] = {}
_NETWORKS_LOCK = threading.Lock()
_CACHE_SIZE = 2


def _network_and_config(source: Any, model_config: ModelConfig | None) -> tuple[nn.Module, ModelConfig]:
    """Resolve a predictor, checkpoint or network to (network, preprocessing config)."""
    if isinstance(source, nn.Module):
        if model_config is None:
            raise ValueError(
                "stn_aligned: pass model_config with a bare network (it decides the preprocessing)"
            )
        return source, model_config
    checkpoint = source if isinstance(source, Checkpoint) else getattr(source, "checkpoint", None)
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            f"stn_aligned needs a Checkpoint, an EmotionPredictor or a network, got {type(source).__name__}"
        )
    network = getattr(getattr(source, "classifier", None), "model", None)  # the torch backend's network
    if not isinstance(network, nn.Module):
        with _NETWORKS_LOCK:
            cached = _NETWORKS.get(id(checkpoint))
            if cached is None or cached[0] is not checkpoint:
                if len(_NETWORKS) >= _CACHE_SIZE:
                    _NETWORKS.pop(next(iter(_NETWORKS)))
                cached = (checkpoint, model_from_checkpoint(checkpoint).eval())
                _NETWORKS[id(checkpoint)] = cached
            network = cached[1]
    return network, checkpoint.model_config


def has_stn(source: Any) -> bool:
    """Whether the model (a predictor, checkpoint or network) has a Spatial Transformer."""
    if isinstance(source, nn.Module):
        return isinstance(getattr(source, "stn", None), SpatialTransformer)
    checkpoint = source if isinstance(source, Checkpoint) else getattr(source, "checkpoint", None)
    if isinstance(checkpoint, Checkpoint):
        return checkpoint.model_config.arch == "emonext" and checkpoint.model_config.stn
    return False


def stn_aligned(source: Any, face: np.ndarray, model_config: ModelConfig | None = None) -> np.ndarray:
    """The STN-warped face the model's backbone sees.

    Args:
        source: An :class:`~emonext.predict.EmotionPredictor` (its torch network is reused), a
            :class:`~emonext.checkpoint.Checkpoint` (a network is built once and cached), or a
            network (then ``model_config`` is required).
        face: uint8 grayscale face (S, S) as :meth:`EmotionPredictor.crop` returns it.
        model_config: Preprocessing of a bare network.

    Returns:
        uint8 (input_size, input_size): the aligned face. For models without an STN (baselines,
        ``model.stn: false``) the input resized to ``input_size``, and a log line says so.

    Raises:
        ValueError: ``face`` is not a 2-D uint8 image.
    """
    if face.ndim != 2 or face.dtype != np.uint8:
        raise ValueError(
            f"stn_aligned: expected a uint8 grayscale face (S, S), got {face.dtype} {face.shape}"
        )
    network, config = _network_and_config(source, model_config)
    stn = getattr(network, "stn", None)
    if not isinstance(stn, SpatialTransformer):
        logger.info("this model has no Spatial Transformer: the STN view shows the input face resized")
        return resize_square(face, config.input_size)
    parameter = next(network.parameters())
    was_training = stn.training
    stn.eval()
    try:
        with torch.inference_mode():
            batch = eval_transform(torch.from_numpy(np.ascontiguousarray(face))[None, None], config)
            aligned = (
                stn(batch.to(device=parameter.device, dtype=parameter.dtype))[0, 0].float().cpu().numpy()
            )
    finally:
        stn.train(was_training)
    pixels = (aligned * config.std + config.mean) * 255.0
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def stn_view(source: Any, face: np.ndarray, side: int = 192) -> np.ndarray:
    """Input face and STN-aligned face side by side, captioned (BGR image for files and the GUI).

    Args:
        source: As for :func:`stn_aligned`.
        face: uint8 grayscale face (S, S).
        side: Displayed side of each face.
    """
    aligned = stn_aligned(source, face)
    caption = "STN aligned" if has_stn(source) else "no STN (input)"
    return side_by_side(face, aligned, ("input", caption), side=side)


__all__ = ["has_stn", "stn_aligned", "stn_view"]
