"""Model behaviour in timm's test style: shapes, finiteness, gradients, and EmoNeXt's modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SEModule

from emonext.config import load_params
from emonext.models import (
    EmoNeXt,
    FeatureSelfAttention,
    PretrainedWeightsError,
    SpatialTransformer,
    attention_regularization,
    create_model,
)
from tests.conftest import PARAMS_FILE

ARCHITECTURES = [
    ("emonext", "convnext_atto"),
    ("emonext", "convnext_femto"),
    ("resnet18", None),
    ("resnet34", None),
    ("vgg19_bn", None),
    ("densenet121", None),
]

#: These tests build EmoNeXt whatever params.yaml's default architecture is.
EMONEXT = "model.arch=emonext"


@pytest.mark.parametrize(("arch", "backbone"), ARCHITECTURES)
@pytest.mark.parametrize("input_size", [32, 48])
def test_forward_backward(arch: str, backbone: str | None, input_size: int) -> None:
    overrides = [f"model.arch={arch}", f"model.input_size={input_size}", "model.drop_path=0.0"]
    if backbone:
        overrides.append(f"model.backbone={backbone}")
    model = create_model(load_params(PARAMS_FILE, overrides).model, num_classes=7)
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, input_size, input_size)
    output = model.forward_with_attention(inputs)
    assert output.logits.shape == (2, 7)
    assert torch.isfinite(output.logits).all()
    loss = output.logits.logsumexp(-1).mean()
    if output.attention is not None:
        loss = loss + attention_regularization(output.attention)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
    model.eval()
    torch.testing.assert_close(model(inputs), model.forward_with_attention(inputs).logits)


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (37, 53), (224, 224)])
def test_identity_initialised_stn_returns_its_input(size: tuple[int, int]) -> None:
    stn = SpatialTransformer()
    inputs = torch.randn(3, 3, *size)
    for mode in (True, False):
        stn.train(mode)
        torch.testing.assert_close(stn(inputs), inputs, atol=1e-4, rtol=1e-4)
    theta = stn.theta(inputs)
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))


def test_stn_learns_a_transform() -> None:
    stn = SpatialTransformer()
    with torch.no_grad():
        stn.regressor[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        stn.regressor[-1].bias[0] = -1.0  # mirror x
    inputs = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(stn.eval()(inputs), inputs.flip(-1), atol=1e-4, rtol=0)


def test_se_blocks_sit_at_the_three_stage_transitions() -> None:
    model = EmoNeXt(num_classes=7, backbone="convnext_atto", se_reduction=16)
    se_blocks = [module for module in model.se if isinstance(module, SEModule)]
    assert len(se_blocks) == 3
    assert isinstance(model.se[0], torch.nn.Identity)
    assert se_blocks[0].fc1.out_channels == 80 // 16  # exact reduction 16 for atto's 80 channels


def test_ablation_switches_remove_modules() -> None:
    params = load_params(
        PARAMS_FILE, [EMONEXT, "model.stn=false", "model.se=false", "model.self_attention=false"]
    )
    model = create_model(params.model, num_classes=7)
    assert isinstance(model.stn, torch.nn.Identity)
    assert not any(isinstance(module, SEModule) for module in model.modules())
    assert model.attention is None
    output = model.forward_with_attention(torch.randn(2, 3, 48, 48))
    assert output.attention is None


def test_self_attention_is_per_sample() -> None:
    torch.manual_seed(0)
    attention = FeatureSelfAttention(dim=64, num_tokens=8).eval()
    features = torch.randn(4, 64)
    attended, weights = attention(features)
    assert attended.shape == (4, 64) and weights.shape == (4, 8, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 8))
    # A sample's output and weights do not depend on the rest of the batch, even alone.
    single_out, single_weights = attention(features[1:2])
    torch.testing.assert_close(single_out, attended[1:2])
    torch.testing.assert_close(single_weights, weights[1:2])


def test_attention_regularization() -> None:
    uniform = torch.full((2, 4, 4), 0.25)
    assert attention_regularization(uniform).item() == 0.0
    peaked = torch.eye(4).expand(1, 4, 4)
    # Each weight deviates from the mean 1/4 by 3/4 (4 of 16) or -1/4 (12 of 16).
    expected = (4 * 0.75**2 + 12 * 0.25**2) / 16
    assert attention_regularization(peaked).item() == pytest.approx(expected)
    # Batch-size independent: non-zero for a single sample, and a batch is the mean of its samples.
    batch = torch.softmax(torch.randn(3, 4, 4), dim=-1)
    per_sample = torch.stack([attention_regularization(batch[i : i + 1]) for i in range(3)])
    assert per_sample.min() > 0
    torch.testing.assert_close(attention_regularization(batch), per_sample.mean())


def test_attention_tokens_must_divide_the_feature_width() -> None:
    with pytest.raises(ValueError, match=r"model.attention_tokens=7 must divide the feature width 320"):
        create_model(load_params(PARAMS_FILE, [EMONEXT, "model.attention_tokens=7"]).model, num_classes=7)


def test_pretrained_backbone_from_timm_and_official_files(tmp_path: Path) -> None:
    reference = timm.create_model("convnext_atto", num_classes=0)
    timm_file = tmp_path / "convnext_atto.safetensors"
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(timm_file))
    official_file = tmp_path / "convnext_atto_official.pth"
    torch.save({"model": to_official_convnext_keys(reference.state_dict())}, official_file)

    for weights in (timm_file, official_file):
        params = load_params(PARAMS_FILE, [EMONEXT, f"model.pretrained={weights}", "model.output_stride=16"])
        model = create_model(params.model, num_classes=7)
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(model.backbone.state_dict()[key], value, msg=f"{weights.name}: {key}")


def test_pretrained_weights_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    with pytest.raises(PretrainedWeightsError, match=f"{missing}: pretrained weights file not found"):
        create_model(load_params(PARAMS_FILE, [EMONEXT, f"model.pretrained={missing}"]).model, num_classes=7)
    unrelated = tmp_path / "resnet.safetensors"
    save_file(
        {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(unrelated)
    )
    with pytest.raises(PretrainedWeightsError, match="no parameter matches the backbone"):
        create_model(
            load_params(PARAMS_FILE, [EMONEXT, f"model.pretrained={unrelated}"]).model, num_classes=7
        )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="not a readable weights file"):
        create_model(load_params(PARAMS_FILE, [EMONEXT, f"model.pretrained={garbage}"]).model, num_classes=7)


def test_hub_weights_offline_fail_with_a_clear_message() -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import, so the offline machine is a fresh process.
    code = (
        "from emonext.config import load_params; from emonext.models import create_model; "
        f"create_model(load_params({str(PARAMS_FILE)!r}, [{EMONEXT!r}, 'model.pretrained=hub']).model, "
        "num_classes=7)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "PretrainedWeightsError: could not download pretrained weights for convnext_atto" in result.stderr
    assert "set model.pretrained to the file's path" in result.stderr


def to_official_convnext_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt keys -> the official facebookresearch/ConvNeXt release's keys."""
    import re

    official = {}
    for key, value in state.items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("head.norm", "norm")
        if "pwconv" in key and key.endswith("weight"):
            value = value.reshape(value.shape[0], -1)
        official[key] = value
    return official


@pytest.mark.parametrize(("output_stride", "side"), [(32, 2), (16, 4), (8, 8)])
def test_output_stride_sets_the_feature_map_size(output_stride: int, side: int) -> None:
    model = EmoNeXt(num_classes=7, backbone="convnext_atto", output_stride=output_stride)
    features = model.forward_features(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 320, side, side)
