"""Baseline classifiers of the EmoNeXt paper's comparison (ResNet, VGG, DenseNet), from timm.

ResNet: He et al., CVPR 2016. VGG: Simonyan & Zisserman, ICLR 2015. DenseNet: Huang et al.,
CVPR 2017.
"""

from __future__ import annotations

import logging

import timm
import torch

from emonext.models.base import EmotionModel, ModelOutput

logger = logging.getLogger(__name__)

#: Baselines whose timm constructors accept a stochastic depth rate.
_SUPPORTS_DROP_PATH = ("resnet",)


class TimmClassifier(EmotionModel):
    """A timm image classifier behind the :class:`EmotionModel` interface.

    Args:
        name: timm model name (``resnet18``, ``resnet34``, ``vgg19_bn``, ``densenet121``).
        num_classes: Number of emotion classes.
        drop_path: Stochastic depth rate (ResNets only; ignored with a warning elsewhere).
        drop_rate: Dropout before the classifier.
        in_chans: Input channels.
    """

    def __init__(
        self, name: str, num_classes: int, drop_path: float = 0.0, drop_rate: float = 0.0, in_chans: int = 3
    ) -> None:
        super().__init__()
        kwargs: dict[str, float] = {"drop_rate": drop_rate}
        if name.startswith(_SUPPORTS_DROP_PATH):
            kwargs["drop_path_rate"] = drop_path
        elif drop_path > 0:
            logger.warning("%s has no stochastic depth; model.drop_path=%s is ignored", name, drop_path)
        self.backbone = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
        )

    def forward_with_attention(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(logits=self.backbone(x), attention=None)
