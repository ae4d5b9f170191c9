"""The interface every emotion classifier implements."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """Logits (B, num_classes) and, for models with self-attention, its weights (B, T, T)."""

    logits: torch.Tensor
    attention: torch.Tensor | None


class EmotionModel(nn.Module, metaclass=ABCMeta):
    """Base class: ``forward`` returns logits; training also reads the attention weights."""

    @abstractmethod
    def forward_with_attention(self, x: torch.Tensor) -> ModelOutput:
        """Logits and, where the model has self-attention, its weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(x).logits
