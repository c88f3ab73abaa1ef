"""timm feature encoders (``features_only=True``) and offline pretrained-weight loading."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class TimmEncoder(nn.Module):
    """Multi-scale feature extractor over any timm model that supports ``features_only``.

    ``forward`` returns the feature maps shallow to deep; ``channels`` and ``reductions`` describe them.
    ``depth`` keeps only the first ``depth`` feature levels (the deeper stages are not built).
    ``mean`` / ``std`` come from the encoder's timm data config.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        pretrained_path: str | Path | None = None,
        output_stride: int | None = None,
        in_chans: int = 3,
        depth: int | None = None,
    ):
        super().__init__()
        extra = {"output_stride": output_stride} if output_stride and output_stride != 32 else {}
        if depth is not None:
            extra["out_indices"] = tuple(range(int(depth)))
        try:
            self.model = timm.create_model(
                name, features_only=True, pretrained=bool(pretrained) and pretrained_path is None,
                in_chans=in_chans, **extra,
            )
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ValueError(f"unknown timm encoder {name!r}: {err}") from None
            raise
        if pretrained_path is not None:
            load_pretrained_weights(self.model, pretrained_path)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        data_config = timm.data.resolve_model_data_config(self.model)
        self.mean = tuple(float(v) for v in data_config["mean"])
        self.std = tuple(float(v) for v in data_config["std"])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_pretrained_weights(module: nn.Module, path: str | Path) -> int:
    """Load a local state dict file into ``module`` and return the number of tensors loaded.

    Keys that match by name are used directly (timm checkpoints). Otherwise the tensors are matched in
    order by shape, skipping BatchNorm ``num_batches_tracked`` counters, which maps checkpoints of the same
    architecture with other naming (e.g. torchvision's MobileNetV2 onto timm's ``mobilenetv2_100``);
    extra trailing tensors in the file (classifier heads) are ignored.
    """
    path = Path(path)
    source = _read_state_dict(path)
    target = module.state_dict()
    if all(k in source and source[k].shape == v.shape for k, v in target.items()):
        module.load_state_dict({k: source[k] for k in target})
        return len(target)
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(source_items) < len(target_keys):
        raise ValueError(
            f"{path}: holds {len(source_items)} tensors, the encoder needs {len(target_keys)}; wrong architecture?"
        )
    mapped = {}
    for key, (source_key, tensor) in zip(target_keys, source_items):
        if tensor.shape != target[key].shape:
            raise ValueError(
                f"{path}: tensor {source_key!r} {tuple(tensor.shape)} does not fit encoder parameter "
                f"{key!r} {tuple(target[key].shape)}; the file is for another architecture"
            )
        mapped[key] = tensor
    module.load_state_dict(mapped, strict=False)
    return len(mapped)
