"""Model registry/factory, decoders over timm encoders, torchvision models, packages, offline weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from segmodels.config import load_config
from segmodels.models import ModelSpec, create_model, list_models, load_package, register_model, save_package

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "weights" / "mobilenet_v2-b0353104.pth"


def test_registry_lists_contract_names():
    assert {"unet", "fpn", "deeplabv3plus", "tv_deeplabv3_resnet50", "tv_lraspp_mobilenet_v3_large"} <= set(
        list_models()
    )
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", 2)
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet")(lambda num_classes: None)


@pytest.mark.parametrize(
    "name,encoder",
    [
        ("unet", "resnet18"),
        ("unet", "efficientnet_b0"),
        ("unet", "convnext_tiny"),
        ("fpn", "resnet18"),
        ("fpn", "mobilenetv3_large_100"),
        ("deeplabv3plus", "resnet18"),
        ("deeplabv3plus", "efficientnet_b0"),
    ],
)
def test_decoders_return_logits_at_input_size(name, encoder):
    model = create_model(name, 5, encoder_name=encoder).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 5, 64, 96)
    assert len(model.mean) == 3 and len(model.std) == 3


def test_torchvision_model_returns_tensor():
    model = create_model("tv_lraspp_mobilenet_v3_large", 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_package_round_trip(tmp_path):
    model = create_model("fpn", 3, encoder_name="resnet18").eval()
    spec = ModelSpec.from_model(model, num_classes=3, class_names=["a", "b", "c"], image_size=[64, 64])
    save_package(model, spec, tmp_path / "pkg")
    loaded, loaded_spec = load_package(tmp_path / "pkg")
    assert loaded_spec == spec and loaded_spec.model_kwargs == {"encoder_name": "resnet18"}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="model.yaml missing"):
        load_package(tmp_path)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="real-data weights folder absent")
def test_pretrained_path_loads_torchvision_mobilenet_v2_into_timm_encoder():
    reference = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model = create_model("unet", 2, encoder_name="mobilenetv2_100", pretrained_path=str(WEIGHTS))
    encoder_state = model.encoder.model.state_dict()
    torch.testing.assert_close(encoder_state["conv_stem.weight"], reference["features.0.0.weight"])
    torch.testing.assert_close(encoder_state["blocks.6.0.bn3.running_var"], reference["features.17.conv.3.running_var"])
    with pytest.raises(ValueError, match="another architecture"):
        create_model("unet", 2, encoder_name="resnet18", pretrained_path=str(WEIGHTS))


def test_local_weights_preset_ships_no_machine_path():
    """The preset names the encoder; the weights file is the user's (model.pretrained_path=...)."""
    cfg = load_config("train", ["model=unet_mobilenetv2_local"])
    assert cfg.model.pretrained_path is None
    if WEIGHTS.is_file():
        cfg = load_config("train", ["model=unet_mobilenetv2_local", f"model.pretrained_path={WEIGHTS}"])
        model = instantiate(cfg.model, num_classes=2, _convert_="all")
        reference = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
        assert torch.equal(model.encoder.model.conv_stem.weight, reference["features.0.0.weight"])


def test_no_shipped_config_names_an_absolute_path():
    for path in sorted((Path(__file__).resolve().parents[1] / "conf").rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            value = line.split("#")[0].partition(":")[2].strip()
            assert not value.startswith(("/", "~")), f"{path.name}:{number} ships a machine path: {line.strip()}"
