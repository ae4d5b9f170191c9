"""EmoNeXt: an adapted ConvNeXt for facial emotion recognition.

Paper: "EmoNeXt: an Adapted ConvNeXt for Facial Emotion Recognition", Yassine El Boudouri and
Amine Bohi, IEEE MMSP 2023 (arXiv:2501.08199). Official code: github.com/yelboudouri/EmoNeXt.

The network is a Spatial Transformer Network (Jaderberg et al., NeurIPS 2015) that aligns the face,
a ConvNeXt backbone (Liu et al., CVPR 2022; timm's implementation, any size) with
Squeeze-and-Excitation blocks (Hu et al., CVPR 2018) after each downsampling layer, and a
self-attention block over the pooled features whose attention weights are regularised towards
uniformity: ``L = CE + lambda * mean((W - mean(W))^2)``.

Departures from the official code, each deliberate:
* The STN's localisation network pools adaptively, so any input size works (the official
  regressor hard-codes 224x224 inputs).
* Self-attention runs within each sample, over tokens of its own feature vector. The official code
  attends across the batch (a B x B matrix whose mean is always 1/B, degenerate at batch size 1)
  and throws the attended output away; here the output feeds the classifier.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.layers import SEModule
from torch import nn

from emonext.models.base import EmotionModel, ModelOutput


class SpatialTransformer(nn.Module):
    """Affine Spatial Transformer Network, identity at initialisation.

    Args:
        in_chans: Input channels.
        hidden: Width of the regressor's hidden layer.
        pooled_size: Side of the localisation features after adaptive pooling.
    """

    def __init__(self, in_chans: int = 3, hidden: int = 32, pooled_size: int = 4) -> None:
        super().__init__()
        self.localization = nn.Sequential(
            nn.Conv2d(in_chans, 8, kernel_size=7, padding=3),
            nn.BatchNorm2d(8),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, kernel_size=5, padding=2),
            nn.BatchNorm2d(10),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pooled_size),
        )
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(10 * pooled_size * pooled_size, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 6),
        )
        # Identity transform at start: the backbone first sees the face as given.
        nn.init.zeros_(self.regressor[-1].weight)
        with torch.no_grad():
            self.regressor[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """Affine matrices (B, 2, 3) mapping output to input coordinates."""
        return self.regressor(self.localization(x)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FeatureSelfAttention(nn.Module):
    """Scaled dot-product self-attention within one sample's pooled feature vector.

    The feature vector (C,) is split into ``num_tokens`` tokens of C / num_tokens channels (plus a
    learned embedding of the token's position), so the attention weights W (B, T, T) relate the
    feature elements of each sample to each other, independently of the other samples.

    Args:
        dim: Feature width C.
        num_tokens: Number of tokens T; must divide ``dim``.
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        if dim % num_tokens:
            divisors = [n for n in range(1, min(dim, 64) + 1) if dim % n == 0]
            raise ValueError(
                f"model.attention_tokens={num_tokens} must divide the feature width {dim}; "
                f"allowed values include {divisors}"
            )
        self.num_tokens = num_tokens
        self.token_dim = dim // num_tokens
        self.position = nn.Parameter(torch.zeros(1, num_tokens, self.token_dim))
        self.qkv = nn.Linear(self.token_dim, 3 * self.token_dim)
        self.proj = nn.Linear(self.token_dim, self.token_dim)
        self.norm = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the attended features (B, C) and the attention weights (B, T, T)."""
        batch = features.shape[0]
        tokens = features.view(batch, self.num_tokens, self.token_dim) + self.position
        query, key, value = self.qkv(tokens).chunk(3, dim=-1)
        weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(self.token_dim), dim=-1)
        attended = self.proj(weights @ value).reshape(batch, -1)
        return self.norm(features + attended), weights


def attention_regularization(weights: torch.Tensor) -> torch.Tensor:
    """Self-attention regularisation: mean squared deviation of each sample's weights from their mean.

    Args:
        weights: Attention weights (B, T, T) of :class:`FeatureSelfAttention`.

    Returns:
        Scalar ``mean_b mean_ij (W_bij - mean(W_b))^2``; it does not depend on batch composition.
    """
    centred = weights - weights.mean(dim=(-2, -1), keepdim=True)
    return centred.float().pow(2).mean()


class EmoNeXt(EmotionModel):
    """EmoNeXt: STN -> ConvNeXt with SE at stage transitions -> self-attention -> linear head.

    Args:
        num_classes: Number of emotion classes.
        backbone: timm ConvNeXt variant (``convnext_atto`` ... ``convnext_xlarge``).
        output_stride: Backbone output stride (32 in ConvNeXt; 16 or 8 dilate the last stages).
        use_stn: Prepend the Spatial Transformer Network.
        use_se: Add Squeeze-and-Excitation after each downsampling layer.
        se_reduction: SE channel reduction ratio.
        use_self_attention: Add the self-attention block (its weights are returned for the
            regularisation term).
        attention_tokens: Tokens per feature vector for self-attention.
        drop_path: Stochastic depth rate.
        drop_rate: Dropout before the classifier.
        in_chans: Input channels.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "convnext_tiny",
        output_stride: int = 32,
        use_stn: bool = True,
        use_se: bool = True,
        se_reduction: int = 16,
        use_self_attention: bool = True,
        attention_tokens: int = 16,
        drop_path: float = 0.1,
        drop_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not backbone.startswith("convnext"):
            raise ValueError(f"EmoNeXt needs a timm ConvNeXt backbone (convnext_*), got {backbone!r}")
        self.stn = SpatialTransformer(in_chans) if use_stn else nn.Identity()
        self.backbone = timm.create_model(
            backbone,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            drop_path_rate=drop_path,
            output_stride=output_stride,
        )
        stage_widths = [info["num_chs"] for info in self.backbone.feature_info]
        # SE after the downsampling layer that opens stages 1..3, as in the paper.
        self.se = nn.ModuleList(
            [
                SEModule(width, rd_ratio=1.0 / se_reduction, rd_divisor=1)
                if use_se and index > 0
                else nn.Identity()
                for index, width in enumerate(stage_widths)
            ]
        )
        self.num_features = self.backbone.num_features
        self.attention = (
            FeatureSelfAttention(self.num_features, attention_tokens) if use_self_attention else None
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Aligned face -> final feature map (B, C, H', W')."""
        x = self.stn(x)
        x = self.backbone.stem(x)
        for stage, squeeze_excite in zip(self.backbone.stages, self.se, strict=True):
            x = stage.downsample(x)
            x = squeeze_excite(x)
            x = stage.blocks(x)
        return self.backbone.norm_pre(x)

    def forward_with_attention(self, x: torch.Tensor) -> ModelOutput:
        pooled = self.backbone.forward_head(self.forward_features(x), pre_logits=True)
        weights = None
        if self.attention is not None:
            pooled, weights = self.attention(pooled)
        return ModelOutput(logits=self.head(self.head_drop(pooled)), attention=weights)
