"""Emotion classifiers: EmoNeXt and the baselines, built from a :class:`ModelConfig`."""

from __future__ import annotations

from emonext.config import ModelConfig
from emonext.models.base import EmotionModel, ModelOutput
from emonext.models.baselines import TimmClassifier
from emonext.models.emonext import EmoNeXt, FeatureSelfAttention, SpatialTransformer, attention_regularization
from emonext.models.pretrained import LoadedWeights, PretrainedWeightsError, load_backbone_weights


def create_model(config: ModelConfig, num_classes: int) -> EmotionModel:
    """Build the configured model, loading pretrained backbone weights if configured.

    Args:
        config: Model configuration.
        num_classes: Number of emotion classes.

    Returns:
        The model, in training mode.
    """
    model: EmotionModel
    if config.arch == "emonext":
        model = EmoNeXt(
            num_classes=num_classes,
            backbone=config.backbone,
            output_stride=config.output_stride,
            use_stn=config.stn,
            use_se=config.se,
            se_reduction=config.se_reduction,
            use_self_attention=config.self_attention,
            attention_tokens=config.attention_tokens,
            drop_path=config.drop_path,
            drop_rate=config.drop_rate,
        )
    else:
        model = TimmClassifier(
            config.arch, num_classes=num_classes, drop_path=config.drop_path, drop_rate=config.drop_rate
        )
    if config.pretrained:
        load_backbone_weights(model.backbone, config.pretrained)
    return model


__all__ = [
    "EmoNeXt",
    "EmotionModel",
    "FeatureSelfAttention",
    "LoadedWeights",
    "ModelOutput",
    "PretrainedWeightsError",
    "SpatialTransformer",
    "TimmClassifier",
    "attention_regularization",
    "create_model",
    "load_backbone_weights",
]
