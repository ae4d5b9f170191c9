from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emonext.config import ConfigError, apply_overrides, flatten, load_params
from tests.conftest import PARAMS_FILE, REPO


def write_params(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_parse_into_typed_sections() -> None:
    params = load_params(PARAMS_FILE)
    assert params.data.classes == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert params.model.arch == "resnet18"  # the best row of bench/results/quality_60min.md
    assert isinstance(params.train.lr, float)
    # Relative paths are resolved against the params file, not the working directory.
    assert params.data.root == REPO / "data" / "split"
    assert params.train.output_dir.is_absolute()


def test_override_parses_yaml_values() -> None:
    params = load_params(
        PARAMS_FILE,
        ["train.lr=3e-4", "augment.crop_scale=[0.5, 0.9]", "model.pretrained=null", "train.ema=false"],
    )
    assert params.train.lr == pytest.approx(3e-4)
    assert params.augment.crop_scale == (0.5, 0.9)
    assert params.model.pretrained is None
    assert params.train.ema is False


def test_unknown_override_key_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; allowed keys here: .*\blr\b"):
        load_params(PARAMS_FILE, ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"trian: unknown key; allowed keys here: augment, clean, data"):
        load_params(PARAMS_FILE, ["trian.lr=1"])


def test_malformed_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr"])


def test_bad_literal_names_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as error:
        load_params(PARAMS_FILE, ["model.arch=vgg16", "train.precision=fp8"])
    message = str(error.value)
    assert "model.arch" in message and "'emonext'" in message and "'densenet121'" in message
    assert "train.precision" in message and "'bf16'" in message
    assert "2 problem(s)" in message


def test_unknown_key_in_file_is_reported_with_allowed_keys(tmp_path: Path) -> None:
    path = write_params(tmp_path, lambda raw: raw["train"].update(learning_rate=0.1))
    with pytest.raises(
        ConfigError, match=r"train\.learning_rate: unknown key; allowed keys: epochs, batch_size"
    ):
        load_params(path)


def test_missing_key_is_reported(tmp_path: Path) -> None:
    path = write_params(tmp_path, lambda raw: raw["model"].pop("input_size"))
    with pytest.raises(ConfigError, match=r"model\.input_size: required key is missing"):
        load_params(path)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("augment.crop_scale=[0.9, 0.5]", "augment.crop_scale"),
        ("train.min_lr=1.0", "min_lr (1.0) must not exceed lr"),
        ("train.device=tpu", "'cuda:N'"),
        ("train.batch_size=0", "train.batch_size: Input should be greater than or equal to 1"),
        ("data.classes=[happy, happiness]", "unique after alias resolution"),
        ("model.output_stride=4", "model.output_stride"),
    ],
)
def test_bad_values_are_rejected(override: str, fragment: str) -> None:
    with pytest.raises(
        ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        load_params(PARAMS_FILE, [override])


def test_class_aliases_are_canonicalised() -> None:
    params = load_params(PARAMS_FILE, ["data.classes=[Anger, HAPPINESS, sadness, contempt]"])
    assert params.data.classes == ("angry", "happy", "sad", "contempt")


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(load_params(PARAMS_FILE))
    assert flat["train.lr"] == str(load_params(PARAMS_FILE).train.lr)
    assert flat["augment.crop_scale"].startswith("[")
    assert all("." in key for key in flat)
