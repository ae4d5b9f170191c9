"""Batched preprocessing and augmentation on uint8 face tensors.

Training augmentation (random crop, rotation, horizontal flip) is one affine resampling of the
whole batch (``affine_grid`` + ``grid_sample``), which also resizes to the network input: far
cheaper on two cores than per-image PIL transforms. Evaluation is deterministic: resize and
normalise, optionally TenCrop test-time augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from emonext.config import AugmentConfig, ModelConfig

TENCROP_RESIZE_RATIO = 0.875  # crops cover 87.5% of the resized face, as in the usual 224/256


def normalize(images: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """Scale float images in [0, 255] to the model's normalisation and repeat gray to 3 channels."""
    normalized = (images / 255.0 - model.mean) / model.std
    return normalized.expand(-1, 3, -1, -1).contiguous()


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a float batch (N, C, H, W) to ``size`` x ``size`` (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def eval_transform(images: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """Deterministic preprocessing: uint8 (N, 1, H, W) -> normalised float (N, 3, S, S)."""
    return normalize(resize(images.float(), model.input_size), model)


def ten_crop_transform(images: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """TenCrop: the four corners, the centre and their mirrors of a slightly enlarged face.

    Returns:
        Float tensor (N, 10, 3, S, S).
    """
    size = model.input_size
    enlarged = resize(images.float(), math.ceil(size / TENCROP_RESIZE_RATIO))
    full = enlarged.shape[-1]
    offsets = [(0, 0), (0, full - size), (full - size, 0), (full - size, full - size)]
    centre = (full - size) // 2
    offsets.append((centre, centre))
    crops = [enlarged[..., top : top + size, left : left + size] for top, left in offsets]
    crops += [crop.flip(-1) for crop in crops]
    stacked = torch.stack(crops, dim=1)  # (N, 10, 1, S, S)
    batch = stacked.flatten(0, 1)
    return normalize(batch, model).unflatten(0, (len(images), 10))


def train_transform(
    images: torch.Tensor, augment: AugmentConfig, model: ModelConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random crop, rotation, flip and erasing of a uint8 batch, resized to the model input.

    Args:
        images: uint8 tensor (N, 1, H, W).
        augment: Augmentation ranges.
        model: Model preprocessing (input size, normalisation).
        generator: Source of randomness, so augmentation is reproducible under a seed.

    Returns:
        Normalised float tensor (N, 3, S, S).
    """
    count = len(images)
    size = model.input_size

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    scale = uniform(*augment.crop_scale)
    angle = torch.deg2rad(uniform(-augment.rotation, augment.rotation))
    # A crop of side `scale` can move by (1 - scale) without leaving the face, plus the shift.
    shift_x = uniform(-1.0, 1.0) * ((1.0 - scale) + 2.0 * augment.translate)
    shift_y = uniform(-1.0, 1.0) * ((1.0 - scale) + 2.0 * augment.translate)
    flip = torch.where(torch.rand(count, generator=generator) < augment.hflip, -1.0, 1.0)

    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift_x], dim=1),
            torch.stack([sin * flip, cos, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [count, 1, size, size], align_corners=False)
    source = images.float()
    if source.shape[-1] > 2 * size:
        source = resize(source, 2 * size)  # bilinear sampling aliases when shrinking a lot
    # "border" matches the eval resize at the edges; rotated corners repeat the edge pixels.
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    batch = normalize(warped, model)
    if augment.random_erasing > 0:
        batch = random_erasing(batch, augment.random_erasing, generator)
    return batch


def random_erasing(batch: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Zero (the normalised mean) one random rectangle of 2-20% area in each chosen image."""
    count, _, height, width = batch.shape
    area = (0.02 + 0.18 * torch.rand(count, generator=generator)) * height * width
    log_ratio = (torch.rand(count, generator=generator) * 2 - 1) * math.log(3.3)
    ratio = torch.exp(log_ratio)
    erase_h = torch.sqrt(area * ratio).clamp(1, height).long()
    erase_w = torch.sqrt(area / ratio).clamp(1, width).long()
    top = (torch.rand(count, generator=generator) * (height - erase_h + 1)).long()
    left = (torch.rand(count, generator=generator) * (width - erase_w + 1)).long()
    chosen = torch.rand(count, generator=generator) < probability
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    mask = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + erase_h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + erase_w).view(-1, 1, 1))
        & chosen.view(-1, 1, 1)
    )
    return batch.masked_fill(mask.unsqueeze(1), 0.0)
