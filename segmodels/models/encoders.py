"""timm feature encoders (``features_only=True``) and offline pretrained-weight loading."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import safetensors.torch
import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)


class TimmEncoder(nn.Module):
    """Multi-scale feature extractor over any timm model that supports ``features_only``.

    ``forward`` returns the feature maps shallow to deep; ``channels`` and ``reductions`` describe them.
    ``depth`` keeps only the first ``depth`` feature levels (the deeper stages are not built).
    ``mean`` / ``std`` come from the encoder's timm data config.
    ``pretrained_path`` is a local weights file of the full timm model (``timm.create_model(name)``) or of
    the same architecture from torchvision; see ``load_pretrained_weights``.
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
        features = {"out_indices": tuple(range(int(depth)))} if depth is not None else {}
        try:
            self.model = timm.create_model(
                name,
                features_only=True,
                pretrained=bool(pretrained) and pretrained_path is None,
                in_chans=in_chans,
                **extra,
                **features,
            )
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ValueError(f"unknown timm encoder {name!r}: {err}") from None
            raise
        if pretrained_path is not None:
            full_model = timm.create_model(name, in_chans=in_chans, **extra)
            load_pretrained_weights(
                self.model, pretrained_path, reference=full_model, description=f"timm encoder {name!r}"
            )
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        data_config = timm.data.resolve_model_data_config(self.model)
        self.mean = tuple(float(v) for v in data_config["mean"])
        self.std = tuple(float(v) for v in data_config["std"])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


def load_pretrained_weights(
    module: nn.Module, path: str | Path, reference: nn.Module | None = None, description: str | None = None
) -> int:
    """Load the local weights file ``path`` into ``module``; return the number of tensors loaded.

    The file is fitted to ``reference``'s state dict (default: ``module``'s), e.g. the full timm model whose
    ``features_only`` wrapper ``module`` is, so the file's names are those of the full model. Tensors match by
    name; else, for the same architecture under other names (torchvision's MobileNetV2 for timm's
    ``mobilenetv2_100``), in order, only when every shape the module needs agrees. Tensors the module does not
    use (classifier heads, stages beyond a truncated ``depth``) are ignored. Raises ``FileNotFoundError`` for a
    missing file and a one-line ``ValueError`` for an unreadable one or one whose tensors do not fit, naming them.
    """
    path = Path(path)
    description = description or type(module).__name__
    source = _read_state_dict(path)
    target = (module if reference is None else reference).state_dict()
    names = _reference_names(module, target, description)
    used_names = set(names.values())
    needed = [k for k in target if k in used_names]
    fitted, name_problems = _fit_by_name(source, target, needed)
    if name_problems:
        fitted, order_problems = _fit_in_order(source, target, needed)
        if order_problems:
            overlap = any(k in target for k in source if not _is_counter(k))
            raise ValueError(
                f"pretrained_path={path} does not fit {description}: " + (name_problems if overlap else order_problems)
            )
    state = {k: source[fitted[names[k]]] for k in module.state_dict() if names[k] in fitted}
    module.load_state_dict(state, strict=False)
    logger.info(
        "pretrained_path=%s: loaded %d tensors into %s, %d file tensors unused (head, deeper stages)",
        path,
        len(state),
        description,
        len(source) - len(set(fitted.values())),
    )
    return len(state)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file (``.safetensors`` or ``torch.save``), unwrapped and without
    ``module.`` / ``_orig_mod.`` prefixes."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path={path}: file not found")
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"pretrained_path={path}: not a readable weights file ({reason})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"keys {', '.join(map(str, list(state)[:5]))}" if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"pretrained_path={path}: not a state dict of tensors (found {found})")
    return timm.models.clean_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})


def _reference_names(module: nn.Module, target: dict[str, torch.Tensor], description: str) -> dict[str, str]:
    """Map ``module``'s state-dict keys to ``target``'s, undoing the renaming of timm's feature wrappers
    (``stages_0.x`` for a flattened ``stages.0.x``, ``model.x`` / ``body.x`` for a wrapped ``x``)."""
    flat = {"_".join(parts[:2]): ".".join(parts[:2]) for parts in (k.split(".") for k in target) if len(parts) > 2}
    names, unknown = {}, []
    for key, tensor in module.state_dict().items():
        head, _, rest = key.partition(".")
        match = next(
            (c for c in (key, f"{flat.get(head)}.{rest}", rest) if c in target and target[c].shape == tensor.shape),
            None,
        )
        names[key] = match
        if match is None:
            unknown.append(key)
    if unknown or len(set(names.values())) != len(names):
        raise RuntimeError(f"cannot relate {description}'s tensors to its full model's ({', '.join(unknown[:3])})")
    return names


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _listed(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _fit_by_name(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], needed: list[str]
) -> tuple[dict[str, str], str]:
    """Map the needed target keys to the file's by name; also say what does not fit (empty when all does).

    When no needed tensor is missing, file tensors named like no target tensor belong to another architecture
    up to the file's last fitting name and to a head after it.
    """
    missing = [k for k in needed if k not in source and not _is_counter(k)]
    wrong = [k for k in needed if k in source and source[k].shape != target[k].shape]
    file_keys = list(source)
    last = max((i for i, k in enumerate(file_keys) if k in target), default=-1)
    stray = [k for k in file_keys[: None if missing else last] if k not in target]
    problems = []
    if missing:
        problems.append(f"{len(missing)} encoder tensors missing from the file ({_listed(missing)})")
    if wrong:
        shapes = [f"{k}: file {_shape(source[k])}, encoder {_shape(target[k])}" for k in wrong]
        problems.append(f"{len(wrong)} of different shape ({_listed(shapes, 2)})")
    if stray:
        problems.append(f"{len(stray)} file tensors fit no encoder tensor ({_listed(stray)})")
    return {k: k for k in needed if k in source}, ", ".join(problems)


def _fit_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], needed: list[str]
) -> tuple[dict[str, str], str]:
    """Map the needed target keys to the file's by position (BatchNorm counters aside); also say what does not fit.

    The file must hold as many tensors as the target (more only when the target needs all of its own: the extra
    ones are the file's head), and every needed tensor's shape must equal the file's at its position.
    """
    files = [k for k in source if not _is_counter(k)]
    targets = [k for k in target if not _is_counter(k)]
    needed_set = set(needed)
    count_fits = len(files) == len(targets) or (len(files) > len(targets) and needed_set >= set(targets))
    pairs = [(t, f) for f, t in zip(files, targets) if t in needed_set]
    wrong = [(t, f) for t, f in pairs if source[f].shape != target[t].shape]
    if not count_fits or wrong:
        shapes = [f"{f} -> {t}: file {_shape(source[f])}, encoder {_shape(target[t])}" for t, f in wrong]
        return {}, (
            f"names differ from the encoder's and in file order its tensors are another architecture: "
            f"{len(files)} tensors, the encoder's full model has {len(targets)}"
            + (f", {len(wrong)} of different shape ({_listed(shapes, 2)})" if wrong else "")
        )
    fitted = dict(pairs)
    counters = {_counter(t): _counter(f) for t, f in pairs if t.endswith(".running_mean")}
    fitted.update({t: f for t, f in counters.items() if t in target and f in source})
    return fitted, ""


def _counter(running_mean_key: str) -> str:
    """The BatchNorm ``num_batches_tracked`` key next to a ``running_mean`` key."""
    return running_mean_key.removesuffix("running_mean") + "num_batches_tracked"
