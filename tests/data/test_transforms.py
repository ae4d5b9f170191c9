from __future__ import annotations

import pytest
import torch

from emonext.config import AugmentConfig, load_params
from emonext.data.transforms import eval_transform, random_erasing, ten_crop_transform, train_transform
from tests.conftest import PARAMS_FILE, sample_params

NO_AUGMENT = AugmentConfig(crop_scale=(1.0, 1.0), translate=0.0, rotation=0.0, hflip=0.0, random_erasing=0.0)


@pytest.fixture
def faces() -> torch.Tensor:
    return torch.randint(
        0, 256, (4, 1, 48, 48), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )


def test_eval_transform_is_deterministic_three_channel(faces: torch.Tensor) -> None:
    model = load_params(PARAMS_FILE, ["model.input_size=64"]).model
    batch = eval_transform(faces, model)
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
    assert torch.equal(batch[:, 0], batch[:, 2])
    assert torch.equal(batch, eval_transform(faces, model))
    same_size = eval_transform(faces, load_params(PARAMS_FILE, ["model.input_size=48"]).model)
    expected = (faces.float() / 255 - model.mean) / model.std
    torch.testing.assert_close(same_size[:, :1], expected)


def test_identity_augmentation_equals_eval_preprocessing(faces: torch.Tensor) -> None:
    for size in (48, 64):
        model = load_params(PARAMS_FILE, [f"model.input_size={size}"]).model
        augmented = train_transform(faces, NO_AUGMENT, model, torch.Generator().manual_seed(0))
        torch.testing.assert_close(augmented, eval_transform(faces, model), atol=1e-4, rtol=0)


def test_flip_probability_one_mirrors(faces: torch.Tensor) -> None:
    model = load_params(PARAMS_FILE, ["model.input_size=48"]).model
    flip = NO_AUGMENT.model_copy(update={"hflip": 1.0})
    augmented = train_transform(faces, flip, model, torch.Generator().manual_seed(0))
    torch.testing.assert_close(augmented, eval_transform(faces, model).flip(-1), atol=1e-4, rtol=0)


def test_augmentation_is_reproducible_and_random(faces: torch.Tensor) -> None:
    params = sample_params()
    first = train_transform(faces, params.augment, params.model, torch.Generator().manual_seed(1))
    again = train_transform(faces, params.augment, params.model, torch.Generator().manual_seed(1))
    other = train_transform(faces, params.augment, params.model, torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == (4, 3, params.model.input_size, params.model.input_size)


def test_ten_crop_views(faces: torch.Tensor) -> None:
    model = load_params(PARAMS_FILE, ["model.input_size=48"]).model
    views = ten_crop_transform(faces, model)
    assert views.shape == (4, 10, 3, 48, 48)
    torch.testing.assert_close(views[:, 5:], views[:, :5].flip(-1))
    assert not torch.equal(views[:, 0], views[:, 3])


def test_random_erasing_zeroes_a_rectangle() -> None:
    batch = torch.ones(8, 3, 32, 32)
    erased = random_erasing(batch, 1.0, torch.Generator().manual_seed(0))
    zero_fraction = (erased == 0).float().mean(dim=(1, 2, 3))
    assert torch.all(zero_fraction > 0.0) and torch.all(zero_fraction < 0.5)
    assert torch.equal(random_erasing(batch, 0.0, torch.Generator().manual_seed(0)), batch)
