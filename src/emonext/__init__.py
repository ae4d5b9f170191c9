"""emonext: facial emotion recognition with EmoNeXt.

EmoNeXt (El Boudouri & Bohi, "EmoNeXt: an Adapted ConvNeXt for Facial Emotion Recognition",
MMSP 2023, arXiv:2501.08199) combines a Spatial Transformer Network, a ConvNeXt backbone with
Squeeze-and-Excitation blocks and a self-attention regularisation term.
"""

from emonext import _torchvision_guard

# timm imports torchvision: the guard must run before torchvision's first import.
_torchvision_guard.install_import_hook()

__version__ = "0.1.0"
