"""``pretrained_path``: weight files in timm or torchvision key layout loaded into ``TimmEncoder``, checked
against the models they come from; files that do not fit fail with a one-line error naming the tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from segmodels.models import TimmEncoder, create_model

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "weights"
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with distinct random values in every 1-d tensor too (BatchNorm weights and
    running statistics), so a mis-mapped tensor cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.ndim == 1:
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(noise + 0.5 if key.endswith(("weight", "running_var")) else (noise - 0.5) * 0.2)
    return model.eval()


def _saved(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def _features(encoder: TimmEncoder) -> list[torch.Tensor]:
    with torch.no_grad():
        return encoder.eval()(X)


def _assert_states_equal(actual: nn.Module, expected: nn.Module) -> None:
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for key, tensor in expected_state.items():
        assert torch.equal(actual_state[key], tensor), key


def test_timm_layout_file_loads_resnet18_exactly(tmp_path):
    full = _randomized(timm.create_model("resnet18"))
    path = _saved(full.state_dict(), tmp_path / "resnet18.pth")
    reference = timm.create_model("resnet18", features_only=True)
    reference.load_state_dict({k: full.state_dict()[k] for k in reference.state_dict()})
    encoder = TimmEncoder("resnet18", pretrained_path=path)
    _assert_states_equal(encoder.model, reference)
    for ours, theirs in zip(_features(encoder), reference.eval()(X)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["convnext_atto", "mobilenetv3_small_050", "vit_tiny_patch16_224"])
def test_timm_layout_file_matches_timms_own_loading_across_feature_wrappers(tmp_path, name):
    """Renamed (flattened ``stages_0``), features-class and ``model.``-wrapped encoders: the same tensors
    as timm's own loading of the file into the features model."""
    path = _saved(_randomized(timm.create_model(name)).state_dict(), tmp_path / f"{name}.pth")
    timm_loaded = timm.create_model(
        name, features_only=True, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    _assert_states_equal(TimmEncoder(name, pretrained_path=path).model, timm_loaded)


def test_torchvision_resnet18_layout_gives_torchvisions_activations(tmp_path):
    tv = _randomized(torchvision.models.resnet18())
    encoder = TimmEncoder("resnet18", pretrained_path=_saved(tv.state_dict(), tmp_path / "tv_resnet18.pth"))
    with torch.no_grad():
        stem = tv.relu(tv.bn1(tv.conv1(X)))
        expected = [stem]
        for layer in (nn.Sequential(tv.maxpool, tv.layer1), tv.layer2, tv.layer3, tv.layer4):
            expected.append(layer(expected[-1]))
    for ours, theirs in zip(_features(encoder), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


# timm mobilenetv2_100's feature levels end after torchvision's features[1], [3], [6], [13] and [17]
# (features[18] is the 1280-channel head conv, which the features model does not build).
MOBILENET_V2_LEVEL_ENDS = (2, 4, 7, 14, 18)


def _assert_mobilenet_v2_features(encoder: TimmEncoder, tv: nn.Module) -> None:
    with torch.no_grad():
        expected = [tv.features[:end](X) for end in MOBILENET_V2_LEVEL_ENDS]
    assert len(tv.features) == MOBILENET_V2_LEVEL_ENDS[-1] + 1
    for ours, theirs in zip(_features(encoder), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_torchvision_mobilenet_v2_layout_gives_torchvisions_activations(tmp_path):
    tv = _randomized(torchvision.models.mobilenet_v2())
    path = _saved(tv.state_dict(), tmp_path / "tv_mobilenet_v2.pth")
    _assert_mobilenet_v2_features(TimmEncoder("mobilenetv2_100", pretrained_path=path), tv)


@pytest.mark.skipif(not (WEIGHTS / "mobilenet_v2-b0353104.pth").is_file(), reason="real-data weights folder absent")
def test_real_torchvision_mobilenet_v2_file_gives_torchvisions_activations():
    path = WEIGHTS / "mobilenet_v2-b0353104.pth"
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    _assert_mobilenet_v2_features(TimmEncoder("mobilenetv2_100", pretrained_path=path), tv.eval())


def test_depth_truncated_encoder_loads_its_prefix_of_the_full_file(tmp_path):
    full = _randomized(timm.create_model("resnet18"))
    encoder = TimmEncoder("resnet18", depth=3, pretrained_path=_saved(full.state_dict(), tmp_path / "r18.pth"))
    assert len(encoder.channels) == 3 and "layer3.0.conv1.weight" not in encoder.model.state_dict()
    for key, tensor in encoder.model.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[key]), key
    tv = _randomized(torchvision.models.mobilenet_v2())
    shallow = TimmEncoder("mobilenetv2_100", depth=2, pretrained_path=_saved(tv.state_dict(), tmp_path / "mv2.pth"))
    with torch.no_grad():
        torch.testing.assert_close(_features(shallow)[-1], tv.features[: MOBILENET_V2_LEVEL_ENDS[1]](X))


def test_wrapped_file_with_module_prefix_loads(tmp_path):
    full = _randomized(timm.create_model("resnet18"))
    wrapped = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}
    encoder = TimmEncoder("resnet18", pretrained_path=_saved(wrapped, tmp_path / "ddp.pth"))
    assert torch.equal(
        encoder.model.state_dict()["layer4.1.bn2.running_var"], full.state_dict()["layer4.1.bn2.running_var"]
    )


def _error(name: str, path: Path) -> str:
    with pytest.raises(ValueError) as caught:
        TimmEncoder(name, pretrained_path=path)
    message = str(caught.value)
    assert "\n" not in message and f"pretrained_path={path} does not fit timm encoder {name!r}" in message
    return message


def test_files_of_other_architectures_are_rejected_listing_unmatched_tensors(tmp_path):
    resnet18 = _saved(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")
    message = _error("mobilenetv2_100", resnet18)
    assert "encoder tensors missing from the file (conv_stem.weight, " in message
    assert "bn1.weight: file (64,), encoder (32,)" in message and "fit no encoder tensor (conv1.weight, " in message

    resnet34 = _saved(timm.create_model("resnet34").state_dict(), tmp_path / "resnet34.pth")
    assert "file tensors fit no encoder tensor (layer1.2.conv1.weight, " in _error("resnet18", resnet34)

    mobilenet = _saved(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "tv_mobilenet_v2.pth")
    message = _error("resnet18", mobilenet)
    assert "another architecture" in message
    assert "features.0.0.weight -> conv1.weight: file (32, 3, 3, 3), encoder (64, 3, 7, 7)" in message


def test_one_changed_shape_is_named(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    message = _error("resnet18", _saved(state, tmp_path / "one_channel.pth"))
    assert message.endswith(": 1 of different shape (conv1.weight: file (64, 1, 7, 7), encoder (64, 3, 7, 7))")


def test_missing_or_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"pretrained_path={tmp_path / 'nope.pth'}: file not found"):
        TimmEncoder("resnet18", pretrained_path=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match=r"list\.pth: not a state dict of tensors \(found list\)"):
        TimmEncoder("resnet18", pretrained_path=_saved([1, 2], tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ValueError, match=r"text\.pth: not a readable weights file"):
        TimmEncoder("resnet18", pretrained_path=tmp_path / "text.pth")


def test_torchvision_model_backbone_loads_torchvision_weights_in_order(tmp_path):
    """``tv_lraspp_mobilenet_v3_large``'s backbone (``0.0.weight``, ...) takes torchvision's
    ``mobilenet_v3_large`` file (``features.0.0.weight``, ..., classifier)."""
    tv = _randomized(torchvision.models.mobilenet_v3_large())
    model = create_model(
        "tv_lraspp_mobilenet_v3_large", 2, pretrained_path=str(_saved(tv.state_dict(), tmp_path / "tv_mv3.pth"))
    )
    _assert_states_equal(model.encoder, tv.features)
